"""The device of the ``gpu``-marked tests (tests/gpu, run by benchmarks/gpu_check.sh)."""
import os

#: "cuda", or "cpu" for benchmarks/gpu_check.sh --dry-run
GPU_TEST_DEVICE = os.environ.get("D2GEO_GPU_TEST_DEVICE", "cuda")
