"""Whether the model is being recorded (traced or exported) rather than run.

Its own module so that every encoder module and :mod:`.metadata` can ask without
importing each other.
"""
from __future__ import annotations

import torch

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """True while ``torch.jit.trace`` or ``torch.export`` (also under ``torch.onnx``) records
    the model: value checks that need a concrete tensor are skipped then, and per-size caches
    are bypassed (the recorded model must work at every input size). ``torch.compile`` is
    not included: it guards and recompiles, so the eager code stays correct there."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_exporting())
