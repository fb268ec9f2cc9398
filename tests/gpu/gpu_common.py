"""What the gpu tests share: their device (``D2GEO_GPU_TEST_DEVICE``: ``cuda``, or ``cpu`` for
the dry run of benchmarks/gpu_check.sh) and float32 without TF32, so that "equal to the CPU"
means float32 tolerance. Imported by the test modules (a conftest.py here would clash with
tests/conftest.py: both would be the module ``conftest``)."""
from __future__ import annotations

import pytest
import torch

from helpers.gpu import GPU_TEST_DEVICE

#: float32 agreement of a CUDA result with the CPU one: max |cuda - cpu| / max |cpu|
FP32_REL = 1e-4


@pytest.fixture
def device() -> torch.device:
    return torch.device(GPU_TEST_DEVICE)


def needs_cuda(what: str):
    """Skip (dry run on the CPU) where ``what`` exists only on a CUDA device."""
    if GPU_TEST_DEVICE != "cuda":
        pytest.skip(f"{what} needs CUDA (dry run on {GPU_TEST_DEVICE})")


@pytest.fixture(autouse=True)
def _no_tf32():
    """TF32 matmuls/convolutions round to 10 mantissa bits: off, the comparisons are float32's."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
