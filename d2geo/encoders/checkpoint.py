"""Reading checkpoints safely and loading them into encoders.

Everything that touches a checkpoint file goes through :func:`read_checkpoint`, which
never unpickles code: ``.safetensors`` files are read with safetensors, everything else
with ``torch.load(weights_only=True)``. Family-specific key conversion lives in each
family's ``checkpoint_filter_fn``; this module only unwraps containers and reports.
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import torch
import torch.nn as nn

from .adapt import BAND_RECORD, decode_bands

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError", "FilteredStateDict", "LoadReport", "read_checkpoint", "unwrap_state_dict",
    "strip_to_anchor", "load_encoder_weights", "log_ignored",
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that does not fit the model."""


#: plain containers that official checkpoints carry beside their tensors and that hold no code
#: (SSL4EO-S12's and other training scripts save their ``argparse.Namespace`` as ``args``):
#: allowed through torch's allow-list of safe globals for ``weights_only=True`` loading
SAFE_CHECKPOINT_GLOBALS = (argparse.Namespace,)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file without running any code stored in it.

    Tensors, plain containers and the classes of :data:`SAFE_CHECKPOINT_GLOBALS` are read
    (torch's ``weights_only`` unpickler with that allow-list); anything else a pickle names
    is refused with :class:`CheckpointError`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except SafetensorError as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e}); "
                                  f"it may be truncated: download it again") from e
    try:
        with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled objects other than tensors and plain "
            f"containers, which could run code ({str(e).splitlines()[0]}). Re-save only the "
            f"state dict, or convert it to .safetensors"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"{path} could not be read as a torch checkpoint ({e}); "
            f"it is probably truncated or corrupt: download it again"
        ) from e


_CONTAINER_KEYS = ("state_dict", "model", "module", "model_ema", "teacher")

#: why a checkpoint tensor that is not under the encoder's prefix is not loaded
OUTSIDE_ENCODER = "outside the encoder"


class FilteredStateDict(dict):
    """A checkpoint's tensors under the encoder's names, plus the ones deliberately left out.

    ``ignored`` maps each checkpoint tensor a family decided not to load (a decoder, a
    pretraining-only token, a copy outside the encoder) to the reason. Every tensor of a
    checkpoint is either loaded or named here; anything else is an error.
    """

    def __init__(self, *args, ignored: Mapping[str, str] | None = None, prefix: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.ignored: dict[str, str] = dict(ignored or {})
        #: the prefix the encoder's tensors have in the checkpoint (``teacher.backbone.``, ...)
        self.prefix = prefix

    def ignore(self, key: str, reason: str) -> None:
        """Record that the tensor ``key`` (a name under the prefix) is deliberately not loaded."""
        self.ignored[self.prefix + key] = reason


@dataclass
class LoadReport:
    """What :func:`load_encoder_weights` did: the model keys it loaded and the checkpoint
    tensors it did not load, each with the reason."""

    loaded: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)


def unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Find the flat ``name -> tensor`` mapping inside a checkpoint.

    Handles Lightning (``state_dict``), detectron2 / d2geo (``model``), training
    checkpoints that nest the weights one level deeper, and checkpoints that are a mapping
    of per-module state dicts only (CROMA's ``{"s1_encoder": {...}, "s2_encoder": {...}}``,
    read as one state dict with dotted names). Tensors next to the container
    (an epoch counter saved as a tensor, another copy of the model) are not loaded and
    are logged by name.
    """
    return _unwrap(obj)[0]


def _unwrap(obj: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"a checkpoint is a mapping of names to tensors, got {type(obj).__name__}")
    ignored: dict[str, str] = {}
    path = ""
    for _ in range(5):
        key = next((k for k in _CONTAINER_KEYS
                    if isinstance(obj.get(k), Mapping) and _has_tensors(obj[k])), None)
        if key is None:
            flat = {k: v for k, v in obj.items() if torch.is_tensor(v)}
            if not flat and _is_module_dicts(obj):
                # a checkpoint of per-module state dicts (CROMA's s1_encoder, s2_encoder, ...):
                # one state dict with dotted names
                return {f"{k}.{name}": t for k, sub in obj.items() for name, t in sub.items()}, ignored
            if not flat:
                raise CheckpointError(
                    "no state dict found in the checkpoint: top-level keys are "
                    f"{sorted(map(str, obj))[:10]}; expected tensors or one of {_CONTAINER_KEYS}")
            for k, v in obj.items():  # nested dicts of tensors beside the weights
                if isinstance(v, Mapping) and _has_tensors(v):
                    for name in _tensor_names(v, f"{path}{k}."):
                        ignored[name] = f"{OUTSIDE_ENCODER} (not the state dict)"
            return flat, ignored
        reason = f"{OUTSIDE_ENCODER} (the weights are under {path + key!r})"
        for k, v in obj.items():
            if k == key:
                continue
            if torch.is_tensor(v):
                ignored[f"{path}{k}"] = reason
            elif isinstance(v, Mapping):
                for name in _tensor_names(v, f"{path}{k}."):
                    ignored[name] = reason
        obj, path = obj[key], f"{path}{key}/"
    raise CheckpointError("checkpoint nests state dicts too deeply to unwrap")


def _is_module_dicts(obj: Mapping[str, Any]) -> bool:
    """Whether every top-level value is a flat, non-empty ``name -> tensor`` mapping."""
    return bool(obj) and all(isinstance(v, Mapping) and v and all(torch.is_tensor(t) for t in v.values())
                             for v in obj.values())


def _has_tensors(obj: Mapping[str, Any], depth: int = 0) -> bool:
    return depth < 5 and any(torch.is_tensor(v) or (isinstance(v, Mapping) and _has_tensors(v, depth + 1))
                             for v in obj.values())


def _tensor_names(obj: Mapping[str, Any], prefix: str, depth: int = 0) -> list[str]:
    out = []
    for k, v in obj.items():
        if torch.is_tensor(v):
            out.append(f"{prefix}{k}")
        elif isinstance(v, Mapping) and depth < 5:
            out.extend(_tensor_names(v, f"{prefix}{k}.", depth + 1))
    return out


def _short(keys, n=8) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _summarise(names: list[str]) -> str:
    """Names, with large groups under a common two-level prefix folded into ``prefix.* (N)``."""
    groups: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".")
        groups.setdefault(".".join(parts[:2]) if len(parts) > 2 else name, []).append(name)
    items = []
    for group, members in sorted(groups.items()):
        items.extend(members if len(members) < 3 else [f"{group}.* ({len(members)} tensors)"])
    return _short(items, 12)


def log_ignored(ignored: Mapping[str, str], source: str) -> None:
    """Log the tensors a load left out, by name, grouped by reason (once per load)."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in ignored.items():
        by_reason.setdefault(reason, []).append(name)
    for reason, names in sorted(by_reason.items()):
        logger.info("not loaded from %s, %s: %s", source, reason, _summarise(names))
        logger.debug("all %d tensors not loaded (%s): %s", len(names), reason, sorted(names))


def load_encoder_weights(model: nn.Module, weights: str | os.PathLike | Mapping[str, Any]) -> LoadReport:
    """Load a checkpoint (a path or an already-read mapping) into ``model``.

    The model's ``checkpoint_filter_fn`` converts the upstream names and names the
    tensors it leaves out (``FilteredStateDict.ignored``). Missing encoder keys, and
    checkpoint tensors that are neither loaded nor named as left out, are errors; the
    left-out ones are logged by name. Returns a :class:`LoadReport`.
    """
    source = weights if isinstance(weights, (str, os.PathLike)) else "<state dict>"
    source = os.fspath(source) if not isinstance(source, str) else source
    obj = read_checkpoint(weights) if isinstance(weights, (str, os.PathLike)) else weights
    state_dict, ignored = _unwrap(obj)
    saved_bands = _pop_band_record(model, state_dict, d2geo_written=isinstance(obj, Mapping) and "d2geo" in obj)
    model._kernels_as_saved = saved_bands is not None
    try:
        state_dict = model.checkpoint_filter_fn(state_dict)
    finally:
        model._kernels_as_saved = False
    if saved_bands is not None:
        try:
            model.map_band_kernels(state_dict, saved_bands)
        except ValueError as e:  # BandError included: no saved band is one of the model's
            raise CheckpointError(f"{source}: {e}") from None
    ignored.update(getattr(state_dict, "ignored", {}))
    own = {k: v for k, v in model.state_dict().items() if k.rpartition(".")[2] != BAND_RECORD}
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and own[k].shape != v.shape
    ]
    if shape_errors:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: shapes differ for "
            + "; ".join(shape_errors[:6])
            + ". Is it a checkpoint of another variant (embed_dim, depth, bands)?"
        )
    unknown = [k for k in state_dict if k not in own]
    missing = [k for k in own if k not in state_dict]
    if missing:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: {len(missing)} encoder keys are missing "
            f"({_short(missing)}). Keys it has instead: {_short(unknown) or 'none'}. "
            f"Is this a checkpoint of another model?"
        )
    if unknown:
        raise CheckpointError(
            f"{source} has {len(unknown)} encoder tensors that {type(model).__name__} has no place "
            f"for ({_short(unknown)}; names as converted for the model): it is a checkpoint of "
            f"another variant or version of the model, and loading it without them would give "
            f"other features than the model it comes from. Use the matching variant; if these "
            f"tensors are really not needed, delete them from the state dict and load that"
        )
    result = model.load_state_dict(dict(state_dict), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    if ignored:
        log_ignored(ignored, str(source))
    logger.info("loaded %d tensors from %s into %s", len(state_dict), source, type(model).__name__)
    return LoadReport(loaded=sorted(state_dict), ignored=ignored)


def _pop_band_record(model: nn.Module, state_dict: dict[str, torch.Tensor], d2geo_written: bool):
    """The band names a d2geo-written checkpoint records for the encoder's patch kernels
    (removed from ``state_dict``); the encoder's own bands for a d2geo file without a record
    (its kernels are kept as saved); None for other (upstream) checkpoints."""
    keys = [k for k in state_dict if k.rpartition(".")[2] == BAND_RECORD]
    records = {k: state_dict.pop(k) for k in keys}
    kernels = getattr(model, "band_kernels", lambda bands: {})(getattr(model, "bands", ()))
    if not kernels:
        return None
    for key, record in records.items():
        prefix = key[: -len(BAND_RECORD)]
        if any(prefix + k in state_dict for k in kernels) or len(records) == 1:
            try:
                return decode_bands(record)
            except ValueError as e:
                raise CheckpointError(str(e)) from None
    return tuple(model.bands) if d2geo_written else None


def strip_to_anchor(state_dict: Mapping[str, torch.Tensor], anchor: str,
                    top_level: Collection[str] | None = None) -> FilteredStateDict:
    """Keep the keys under the prefix that ``anchor`` sits under, with the prefix removed.

    This finds the encoder inside wrapped checkpoints (``teacher.backbone.``,
    ``encoder.``, ``model.encoder.``, d2geo's ``vit.``, a detectron2 model's
    ``backbone.net.encoder.``) without a list of known wrappers. The keys outside the
    prefix are returned in ``ignored``. ``top_level`` names the tensors without a dot that
    the family's layouts have (``cls_token``, ...): any other dot-free name under the
    prefix (an epoch counter saved as a tensor) is not part of the encoder and is ignored
    too; names with a dot are left to the family, which must load or name each of them.
    """
    hits = sorted((k[: -len(anchor)] for k in state_dict if k.endswith(anchor)), key=len)
    if not hits:
        raise CheckpointError(
            f"no {anchor!r} in the checkpoint (first keys: {sorted(state_dict)[:6]}); "
            f"is it a checkpoint of another model?"
        )
    # Prefer the teacher in DINO-style training checkpoints, else the shortest prefix.
    prefix = next((p for p in hits if p.startswith("teacher")), hits[0])
    out = FilteredStateDict(prefix=prefix)
    for k, v in state_dict.items():
        if not k.startswith(prefix):
            out.ignored[k] = f"{OUTSIDE_ENCODER} (which is under {prefix!r})"
        elif top_level is not None and "." not in k[len(prefix):] and k[len(prefix):] not in top_level:
            out.ignored[k] = "a top-level tensor that is not part of the encoder"
        else:
            out[k[len(prefix):]] = v
    return out
