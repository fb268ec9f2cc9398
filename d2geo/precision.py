"""The one mixed-precision policy of d2geo: training, scene and region inference ask here.

* ``resolve_precision(precision, device_type)``: the low-precision dtype of a run that uses
  mixed precision. ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"`` (or the dtype) as
  given; ``"auto"`` is bfloat16, except on a CUDA GPU without bfloat16 (float16 there, which
  training pairs with gradient scaling).
* ``native_bfloat16(device_type)``: whether the device computes bfloat16 natively (CUDA GPUs
  with bf16, CPUs with AMX or AVX512-BF16), i.e. whether autocast makes it faster.
* ``autocast(device_type, amp)``: the context inference runs the model under. ``amp="auto"``:
  bfloat16 autocast where :func:`native_bfloat16`, else float32 (inference never picks
  float16 by itself: float16 scores can overflow); ``"bf16"``/``"fp16"``: that dtype always;
  ``"off"``: float32.

Training (:mod:`d2geo.engine.amp`) switches mixed precision on with ``train.amp.enabled`` and
takes the dtype from :func:`resolve_precision`. Pure torch: importable by every layer.
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ["resolve_precision", "native_bfloat16", "autocast", "autocast_dtype", "AMP_CHOICES"]

#: the values of inference's ``amp`` option (``--amp``)
AMP_CHOICES = ("auto", "bf16", "fp16", "off")

_PRECISIONS = {
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}
_OFF = (None, False, "off", "none", "float32", "fp32")


def resolve_precision(precision: str | torch.dtype, device_type: str = "cpu") -> torch.dtype:
    """``"bfloat16"`` / ``"bf16"`` / ``"float16"`` / ``"fp16"`` (or the dtype) -> the dtype;
    ``"auto"``: bfloat16, except on a CUDA GPU without bfloat16 support (float16 there)."""
    if isinstance(precision, str) and precision.strip().lower() == "auto":
        if device_type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    dtype = precision if isinstance(precision, torch.dtype) else _PRECISIONS.get(str(precision).strip().lower())
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(
            f"train.amp.precision={precision!r} is not a mixed-precision type; use 'bfloat16' "
            "(CPU or recent GPUs) or 'float16' (GPUs, with gradient scaling)")
    return dtype


def native_bfloat16(device_type: str) -> bool:
    """Whether ``device_type`` computes bfloat16 natively (so that autocast pays)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        cpu = getattr(torch, "cpu", None)
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
            fn = getattr(cpu, probe, None)
            if fn is not None and fn():
                return True
    return False


def autocast_dtype(device_type: str, amp) -> torch.dtype | None:
    """The dtype inference runs under for ``amp`` (see the module docstring); None: float32."""
    if amp in _OFF:
        return None
    key = str(amp).strip().lower()
    if key not in ("auto", "bf16", "bfloat16", "fp16", "float16"):
        raise ValueError(f"amp={amp!r}: use one of {', '.join(AMP_CHOICES)}")
    if not torch.amp.is_autocast_available(device_type):
        return None
    if key == "auto":
        return torch.bfloat16 if native_bfloat16(device_type) else None
    dtype = resolve_precision(key, device_type)
    if dtype == torch.bfloat16 and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("amp='bf16' on a GPU without bfloat16: use --amp fp16 or --amp off")
    return dtype


def autocast(device_type: str, amp):
    """The autocast context for inference (a no-op context for float32)."""
    dtype = autocast_dtype(device_type, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)
