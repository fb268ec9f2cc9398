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


# -- the default suite's time budget ---------------------------------------------------------------
#: Integration tests that each take 10-75 s on 2 busy cores (whole trainings, several processes,
#: exports at several sizes, the GPU check's dry run): they run in the slow pass (``-m slow``, which
#: CI runs too), so that the default suite stays under 5 minutes on 2 cores. Each has a faster
#: sibling in the default suite (the tiny training tests, the single-size export and fidelity tests).
SLOW_PASS = frozenset([
    "tests/data/test_terramind_real.py::test_semantic_fpn_config_trains_on_real_s2l2a_s1rtc_dem_and_lulc",
    "tests/data/scenes/test_scenes_configs.py::test_scene_quickstart_config_trains_and_evaluates_on_tiny_scenes[quickstart/scenes_instance_tiny.py-instance]",
    "tests/benchmarks/test_gpu_check.py::test_minimal_dry_run_writes_every_part_and_the_summary",
    "tests/tools/test_predict_region.py::test_two_processes_write_exactly_what_one_process_writes",
    "tests/data/test_real_tiles.py::test_semantic_fpn_config_trains_on_real_s2l2a_and_lulc",
    "tests/tools/test_export_model.py::test_detectron2_export_tool_loads_d2geo_yaml_through_run_tool",
    "tests/tools/test_train_net.py::test_two_cpu_processes_train_to_the_end",
    "tests/configs/test_configs.py::test_quickstart_config_builds_model_data_and_evaluator[quickstart/mask_rcnn_tiny.py]",
    "tests/benchmarks/test_gpu_check.py::test_install_path_unpacks_builds_for_the_gpu_and_falls_back_to_cpu_ops",
    "tests/data/scenes/test_scenes_configs.py::test_scene_quickstart_config_trains_and_evaluates_on_tiny_scenes[quickstart/scenes_semantic_tiny.py-semantic]",
    "tests/test_readme.py::test_python_examples_run[docs/encoders.md:block3]",
    "tests/encoders/test_export.py::test_torch_export_with_dynamic_hw_matches_eager[panopticon]",
    "tests/data/scenes/test_scenes_real.py::test_tiny_prithvi_trains_on_real_scene_windows",
    "tests/encoders/test_export.py::test_onnx_with_dynamic_hw_matches_eager_at_other_sizes[dinov2]",
    "tests/encoders/test_croma.py::test_square_sizes_against_upstream_croma[120]",
    "tests/encoders/test_satlas.py::test_stage_taps_native_and_non_square_sizes",
    "tests/encoders/test_copernicusfm.py::test_other_patch_size_resamples_the_generated_kernel",
    "tests/tools/test_export_model.py::test_export_method_export_writes_the_backbone_with_dynamic_size",
    "tests/configs/test_configs.py::test_quickstart_datasets_are_geotiffs_generated_once",
    "tests/configs/test_configs.py::test_quickstart_config_builds_model_data_and_evaluator[quickstart/semantic_fpn_tiny.py]",
    "tests/encoders/test_export.py::test_traced_backbone_matches_eager_at_other_sizes[satlas]",
    "tests/model_zoo/test_model_zoo.py::test_importing_d2geo_modeling_registers_hf_paths_on_pathmanager",
    "tests/inference/test_model_file.py::test_runtime_option_matches_eager[onnxruntime]",
    "tests/tools/test_predict_region.py::test_a_run_killed_after_its_first_scene_resumes_to_the_uninterrupted_outputs",
    "tests/encoders/test_saved_bands.py::test_reloading_saved_weights_keeps_or_maps_the_bands_by_name[satlas]",
    "tests/encoders/test_checkpoint.py::test_adding_an_unknown_encoder_tensor_is_refused[dinov2_reg]",
    "tests/encoders/test_bands.py::test_output_depends_on_every_band_it_was_built_for[dinov3]",
    "tests/encoders/test_scale_mae.py::test_native_and_non_native_square_sizes",
])


# -- the gpu marker (tests/gpu, run by benchmarks/gpu_check.sh) ------------------------------------
from helpers.gpu import GPU_TEST_DEVICE  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects: the SLOW_PASS tests must carry their marker by then
def pytest_collection_modifyitems(config, items):
    """The tests of SLOW_PASS get the ``slow`` marker; ``@pytest.mark.gpu`` tests skip, with the
    reason, where they would need CUDA and it is absent."""
    for item in items:
        if getattr(item, "nodeid", None) in SLOW_PASS:
            item.add_marker(pytest.mark.slow)
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
