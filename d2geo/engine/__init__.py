"""Training-loop pieces on top of detectron2's engine: crash-safe checkpoints and exact resume.

* :class:`GeoCheckpointer` writes every checkpoint (and ``last_checkpoint``) to a temporary
  file in the same directory, fsyncs it and renames it into place, so a run killed at any
  moment leaves the previous checkpoint intact; it reads checkpoints only through
  :func:`d2geo.encoders.checkpoint.read_checkpoint` (``weights_only`` or safetensors, never
  a plain pickle), stores the Python/NumPy/torch RNG states, and refuses an
  ``init_checkpoint`` that holds none of the model's encoder weights.
* :class:`ResumableTrainingSampler` is detectron2's ``TrainingSampler`` that can start
  part-way into its seeded index stream, and :func:`build_train_loader` puts one into a
  ``build_detection_train_loader`` config; :func:`prepare_resume` skips the samples the
  interrupted run used and restores its RNG states just before the first resumed sample
  is mapped.

Together they make ``tools/train_net.py --resume`` continue a killed run exactly as the
uninterrupted run would have gone (see ``docs/bad_inputs.md``, "Crash-safe training",
for what that needs: one process, ``num_workers=0``, a fixed thread count).

This package sits above :mod:`d2geo.modeling` and uses detectron2; the encoders never
import it.
"""
from .checkpoint import (
    GeoCheckpointer,
    atomic_torch_save,
    atomic_write_text,
    capture_rng_state,
    restore_rng_state,
)
from .sampler import ResumableTrainingSampler, build_train_loader, prepare_resume
from .trainer import GeoTrainer

__all__ = [
    "GeoCheckpointer", "atomic_torch_save", "atomic_write_text", "capture_rng_state",
    "restore_rng_state", "ResumableTrainingSampler", "build_train_loader", "prepare_resume", "GeoTrainer",
]
