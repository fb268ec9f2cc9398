"""Fixtures of the test suite. Shared helpers (tiny models, GeoTIFF writers, the upstream
references) are in ``tests/helpers`` (``from helpers import ...``)."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from helpers import TERRAMIND_EXAMPLES


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def terramind_examples() -> str:
    """Folder of the real TerraMind example tiles (S2L1C, S2L2A, S1RTC, DEM, NDVI, LULC, ...)."""
    if not os.path.isdir(os.path.join(TERRAMIND_EXAMPLES, "S2L2A")):
        pytest.skip(f"the real example tiles are not at {TERRAMIND_EXAMPLES} "
                    "(set D2GEO_TERRAMIND_EXAMPLES to their folder)")
    return TERRAMIND_EXAMPLES


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: tiny models run ~10x faster on one thread than on two on a shared
    CPU (the OpenMP workers spin-wait for each other)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def d2_catalog():
    """A list to put registered dataset names in: they leave detectron2's catalogs afterwards."""
    names: list[str] = []
    yield names
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def _logging_state() -> dict:
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    return {id(lg): (lg, lg.propagate, lg.level, list(lg.handlers), lg.disabled) for lg in loggers}


def _put_back(saved: dict) -> None:
    for lg in [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]:
        if id(lg) in saved:
            _, propagate, level, handlers, disabled = saved[id(lg)]
        else:  # made during the test: back to a plain logger that propagates
            propagate, level, handlers, disabled = True, logging.NOTSET, [], False
        lg.propagate, lg.level, lg.disabled = propagate, level, disabled
        lg.handlers[:] = handlers


# -- the gpu marker (tests/gpu, run by benchmarks/gpu_check.sh) ------------------------------------
from helpers.gpu import GPU_TEST_DEVICE  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.gpu`` tests skip, with the reason, where they would need CUDA and it is absent."""
    if GPU_TEST_DEVICE != "cuda" or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: bash benchmarks/gpu_check.sh runs these on a GPU machine "
                                   "(docs/gpu.md); its --dry-run runs them on the CPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
@pytest.fixture(autouse=True)
def _restore_logging():
    """Tools run in-process (train_net, export_model) call detectron2's ``setup_logger``, which
    stops d2geo's loggers from propagating to the root: later ``caplog`` tests would then see
    nothing. Put every logger back as it was before the test."""
    saved = _logging_state()
    yield
    _put_back(saved)


@pytest.fixture(scope="module", autouse=True)
def _restore_logging_after_module():
    """The same around each test module: a module-scoped fixture that runs a tool (a training
    run shared by several tests) is set up before the per-test fixture saves the state."""
    saved = _logging_state()
    yield
    _put_back(saved)
