"""A detectron2 checkpointer that never leaves a half-written file and never unpickles code."""
from __future__ import annotations

import logging
import os
import random
from typing import Any, Mapping

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..data.files import atomic_torch_save, atomic_write_text, remove_stale_temporaries
from ..encoders.licenses import PROVENANCE_ATTR, weights_licenses
from ..encoders.adapt import BAND_RECORD
from ..encoders.checkpoint import CheckpointError, read_checkpoint

logger = logging.getLogger(__name__)

__all__ = [
    "GeoCheckpointer", "atomic_torch_save", "atomic_write_text", "capture_rng_state",
    "restore_rng_state",
]


# -- RNG states ---------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states as tensors and plain containers,
    so that ``torch.load(weights_only=True)`` reads them back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Undo :func:`capture_rng_state`: set every RNG it recorded."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                         int(n["has_gauss"]), float(n["cached_gaussian"])))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the checkpointer ---------------------------------------------------------------------
class GeoCheckpointer(DetectionCheckpointer):
    """detectron2's :class:`~detectron2.checkpoint.DetectionCheckpointer`, made crash- and
    tamper-safe.

    * ``save`` writes ``<name>.pth`` and ``last_checkpoint`` atomically (temporary file in
      the same directory, fsync, ``os.replace``) and adds the RNG states under ``"rng"``.
      Temporary files left by a writer that was killed are removed when the next
      checkpointer for the directory is made.
    * Files are read with :func:`~d2geo.encoders.checkpoint.read_checkpoint`
      (``weights_only=True`` or safetensors); detectron2's ``.pkl`` (plain pickle) format is
      refused.
    * Loading weights that leave every encoder parameter of the model untouched (a
      checkpoint of another model, or an upstream encoder file given as
      ``train.init_checkpoint``) is an error instead of detectron2's warning.
    """

    def __init__(self, model, save_dir: str = "", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        if self.save_dir and self.save_to_disk and os.path.isdir(self.save_dir):
            remove_stale_temporaries(self.save_dir)

    def load(self, path, *args, **kwargs):
        self._loading = path
        try:
            extra = super().load(path, *args, **kwargs)
        finally:
            self._loading = None
        records = extra.get("weights_licenses") if isinstance(extra, dict) else None
        if records:  # a resumed (or fine-tuned-further) model keeps its weights' licenses
            setattr(self.model, PROVENANCE_ATTR, [dict(r) for r in records])
        return extra

    def _local(self) -> bool:
        return "://" not in self.save_dir

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        kwargs.setdefault("rng", capture_rng_state())
        # the licenses of the encoder weights the model started from (d2geo.encoders.weights_licenses)
        kwargs.setdefault("weights_licenses", weights_licenses(self.model))
        if not self._local():  # other storage (PathManager URIs): detectron2's own writer
            super().save(name, **kwargs)
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        os.makedirs(self.save_dir, exist_ok=True)
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._local():
            super().tag_last_checkpoint(last_filename_basename)
            return
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(".pkl"):
            raise CheckpointError(
                f"refusing to read {filename}: .pkl checkpoints are plain Python pickles, which "
                f"can run code when read. Convert it once, where you trust it, to a state dict "
                f"saved with torch.save ({{'model': state_dict}}) or to .safetensors"
            )
        if filename.endswith(".pyth"):
            data = read_checkpoint(filename)
            if "model_state" not in data:
                raise CheckpointError(f"{filename}: a pycls .pyth checkpoint needs 'model_state'")
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        return super()._load_file(filename)

    def _torch_load(self, f: str) -> dict[str, Any]:
        return read_checkpoint(f)

    def _load_model(self, checkpoint: Mapping[str, Any]):
        source = getattr(self, "_loading", None) or "the checkpoint"
        incompatible = super()._load_model(checkpoint)
        if incompatible is None:
            return incompatible
        own = list(self.model.state_dict())
        encoder_keys = [k for k in own if ".encoder." in f".{k}" and not k.endswith(f".{BAND_RECORD}")]
        if not encoder_keys:
            return incompatible
        bad = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
        if all(k in bad for k in encoder_keys):
            shapes = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}"
                      for k, a, b in incompatible.incorrect_shapes[:4]]
            raise CheckpointError(
                f"{source} does not fit this model: none of its {len(encoder_keys)} encoder "
                f"weights were loaded (missing e.g. {sorted(encoder_keys)[:3]}"
                + (f"; shapes differ for {'; '.join(shapes)}" if shapes else "")
                + f"; the checkpoint has e.g. {sorted(incompatible.unexpected_keys)[:3]}). Is it a "
                "checkpoint of another model? train.init_checkpoint takes a checkpoint of this "
                "detectron2 model (or a file written by tools/convert_checkpoint.py); an upstream "
                "encoder checkpoint goes to model.backbone.net.weights instead"
            )
        return incompatible
