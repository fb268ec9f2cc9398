"""How a config + checkpoint model runs over windows: ``torch`` (eager), ``compile``
(``torch.compile`` of the backbone), ``onnxruntime`` (exported on the fly to a temporary
model file, :mod:`.export_file`, and run with numpy arrays, :mod:`.model_file`) or
``onnxruntime-int8`` (that file with int8 linear layers, :mod:`.quantize`: opt-in, it changes
some labels)."""
from __future__ import annotations

import logging
import os
import tempfile

from .request import SceneRequestError

logger = logging.getLogger(__name__)

__all__ = ["RUNTIMES", "prepare_runtime"]

RUNTIMES = ("torch", "compile", "onnxruntime", "onnxruntime-int8")


def prepare_runtime(model, runtime: str, *, cfg=None, tile: int, overlap: int, threads: int | None = None,
                    **fields):
    """``model`` (eval mode, weights loaded) made ready for ``runtime``; ``fields``: model-file
    fields (:func:`~d2geo.inference.export_file.model_fields`) for ``onnxruntime``."""
    if runtime not in RUNTIMES:
        raise SceneRequestError(f"--runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return model
    if runtime == "compile":
        import torch

        model.backbone = torch.compile(model.backbone, dynamic=False)
        logger.info("runtime compile: the backbone is compiled on the first window (takes a while)")
        return model
    from .export_file import export_model_file
    from .model_file import load_model

    with tempfile.TemporaryDirectory(prefix="d2geo-onnx-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_model_file(model, path, cfg, window=tile, overlap=overlap, **fields)
        if runtime == "onnxruntime-int8":
            from .quantize import quantize_model_file

            quantize_model_file(path, os.path.join(tmp, "model.int8.onnx"))
            path = os.path.join(tmp, "model.int8.onnx")
        runner = load_model(path, threads=threads)  # the session holds the graph: the file may go
    logger.info("runtime %s: the model was exported to ONNX for this run", runtime)
    return runner
