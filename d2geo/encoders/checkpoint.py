"""Reading checkpoints safely and loading them into encoders.

Everything that touches a checkpoint file goes through :func:`read_checkpoint`, which
never unpickles code: ``.safetensors`` files are read with safetensors, everything else
with ``torch.load(weights_only=True)``. Family-specific key conversion lives in each
family's ``checkpoint_filter_fn``; this module only unwraps containers and reports.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from typing import Any, Mapping

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError", "read_checkpoint", "unwrap_state_dict", "strip_to_anchor",
    "load_encoder_weights",
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that does not fit the model."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file without running any code stored in it."""
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


def unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Find the flat ``name -> tensor`` mapping inside a checkpoint.

    Handles Lightning (``state_dict``), detectron2 / d2geo (``model``), and training
    checkpoints that nest the weights one level deeper.
    """
    seen = 0
    while not _is_flat(obj):
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            raise CheckpointError(
                "no state dict found in the checkpoint: top-level keys are "
                f"{sorted(obj)[:10]}; expected tensors or one of {_CONTAINER_KEYS}"
            )
        seen += 1
        if seen > 4:
            raise CheckpointError("checkpoint nests state dicts too deeply to unwrap")
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def _is_flat(obj: Mapping[str, Any]) -> bool:
    return isinstance(obj, Mapping) and any(torch.is_tensor(v) for v in obj.values())


def _short(keys, n=8) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_encoder_weights(model: nn.Module, weights: str | os.PathLike | Mapping[str, Any]) -> None:
    """Load a checkpoint (a path or an already-read mapping) into ``model``.

    The model's ``checkpoint_filter_fn`` converts the upstream names. Missing encoder
    keys are an error; unexpected keys that survive the filter are logged.
    """
    source = weights if isinstance(weights, (str, os.PathLike)) else "<state dict>"
    obj = read_checkpoint(weights) if isinstance(weights, (str, os.PathLike)) else weights
    state_dict = unwrap_state_dict(obj)
    state_dict = model.checkpoint_filter_fn(state_dict)
    own = model.state_dict()
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
    result = model.load_state_dict(state_dict, strict=False)
    missing = result.missing_keys
    if missing:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: {len(missing)} encoder keys are missing "
            f"({_short(missing)}). Keys it has instead: {_short(result.unexpected_keys) or 'none'}. "
            f"Is this a checkpoint of another model?"
        )
    if result.unexpected_keys:
        logger.warning("ignored %d unexpected keys from %s: %s", len(result.unexpected_keys),
                       source, _short(result.unexpected_keys))
    logger.info("loaded %d tensors from %s into %s", len(state_dict), source, type(model).__name__)


def strip_to_anchor(state_dict: Mapping[str, torch.Tensor], anchor: str) -> dict[str, torch.Tensor]:
    """Keep the keys under the prefix that ``anchor`` sits under, with the prefix removed.

    This finds the encoder inside wrapped checkpoints (``teacher.backbone.``,
    ``encoder.``, ``model.encoder.``, d2geo's ``vit.``, a detectron2 model's
    ``backbone.net.encoder.``) without a list of known wrappers.
    """
    hits = sorted((k[: -len(anchor)] for k in state_dict if k.endswith(anchor)), key=len)
    if not hits:
        raise CheckpointError(
            f"no {anchor!r} in the checkpoint (first keys: {sorted(state_dict)[:6]}); "
            f"is it a checkpoint of another model?"
        )
    # Prefer the teacher in DINO-style training checkpoints, else the shortest prefix.
    prefix = next((p for p in hits if p.startswith("teacher")), hits[0])
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
