"""int8 dynamic quantization of a model file's linear layers (onnxruntime's ``quantize_dynamic``).

The weights of every ``MatMul``/``Gemm`` (a ViT's attention and MLP projections, most of its
compute) are stored as int8, their inputs are quantized per call at run time; convolutions
and everything else stay float32. The result is a model file like any other (its metadata
copied, its graph hash new). It changes the labels: measure the agreement with the float32
file on your scenes before using it (``benchmarks/region.py`` reports it); it is opt-in
(``--runtime onnxruntime-int8``, or this function), never a default.
"""
from __future__ import annotations

import logging
import os
import tempfile

from .model_file import ModelFileError, ModelMetadata, read_metadata, write_metadata

logger = logging.getLogger(__name__)

__all__ = ["quantize_model_file", "LINEAR_OPS"]

#: the ONNX operators whose weights are quantized: the linear layers
LINEAR_OPS = ("MatMul", "Gemm")


def quantize_model_file(src: str, dst: str) -> ModelMetadata:
    """Write ``dst``: the model file ``src`` with int8 linear layers (see the module docstring);
    returns its metadata. ``src`` is checked first (:func:`read_metadata`)."""
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ModelFileError(f"quantize {src} into another file (dst is the same path): the float32 file is the "
                             f"reference to compare the labels with")
    meta = read_metadata(src)
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ModelFileError("int8 quantization needs onnxruntime: pip install 'd2geo[infer]'") from None
    fields = {k: v for k, v in meta.to_dict().items() if k not in ("format_version", "d2geo_version", "graph_sha256")}
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".quantize-", suffix=".onnx", dir=folder)
    os.close(fd)
    try:
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(max(quiet, logging.ERROR))  # its pre-processing advice, once per call
        try:
            quantize_dynamic(src, tmp, weight_type=QuantType.QInt8, op_types_to_quantize=list(LINEAR_OPS))
        finally:
            logging.getLogger().setLevel(quiet)
        out = write_metadata(tmp, fields)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("wrote %s: %s with int8 linear layers", dst, src)
    return out
