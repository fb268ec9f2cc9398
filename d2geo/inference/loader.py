"""``d2geo.inference.load_model``: a model file, ONNX (:mod:`.model_file`, onnxruntime, no torch)
or ``.pt2`` (:mod:`.pt2_file`, a ``torch.export`` program, needs torch), told apart by the
file's name and first bytes."""
from __future__ import annotations

from typing import Sequence

from .model_file import load_model as load_onnx
from .pt2_file import is_pt2, load_pt2

__all__ = ["load_model"]


def load_model(path: str, *, threads: int | None = None, providers: Sequence[str] | None = None):
    """The model file at ``path``, checked, as a runtime the window loop runs (``.meta``: its
    fields); ``threads`` and ``providers`` are onnxruntime's (a ``.pt2`` file runs in torch)."""
    if is_pt2(path):
        return load_pt2(path)
    return load_onnx(path, threads=threads, providers=providers)
