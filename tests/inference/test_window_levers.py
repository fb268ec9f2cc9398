"""Speed levers of the window loop (issue 22): windows without valid data are not run, numpy
models (onnxruntime) read windows ahead in a thread, and an opt-in int8 model file."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")


def _scene(path, h, w, nodata_cols=0, seed=4):
    """A synthetic 6-band scene whose first ``nodata_cols`` columns (and a lower-left
    triangle, as at a swath edge) are no data."""
    from d2geo.data.synthetic.generator import render_tile, write_geotiff

    rng = np.random.default_rng(seed)
    n = -(-max(h, w) // 64)
    rows = [np.concatenate([render_tile(rng, 64, 64, cloud_prob=0.0, nodata_prob=0.0)[0][0] for _ in range(n)], 2)
            for _ in range(n)]
    img = np.concatenate(rows, 1)[:, :h, :w].copy()
    img[:, :, :nodata_cols] = np.nan
    yy, xx = np.mgrid[:h, :w]
    img[:, yy > xx + h // 2] = np.nan
    write_geotiff(str(path), img, transform=from_origin(500000, 4200000, 10, 10))
    return str(path)


@pytest.fixture(scope="module")
def seg_model():
    pytest.importorskip("detectron2", reason="detectron2 is not installed")
    import torch
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    return instantiate(LazyConfig.load(SEG).model).eval()


def _counting(model):
    import torch

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.windows = model, 0
            self.pixel_mean, self.pixel_std, self.sem_seg_head = model.pixel_mean, model.pixel_std, model.sem_seg_head

        def forward(self, batched_inputs):
            self.windows += len(batched_inputs)
            return self.inner(batched_inputs)

    return Counting()


@pytest.mark.parametrize("max_strip_width", [4096, 96])
def test_windows_without_valid_data_are_not_run_and_the_class_map_is_unchanged(seg_model, tmp_path,
                                                                               max_strip_width):
    """Skipping empty windows changes nothing in the class map (their pixels are no data in
    both runs), also where a whole column strip has no data; only fewer windows run."""
    from d2geo.inference import predict_scene

    path = _scene(tmp_path / "edge.tif", 192, 256, nodata_cols=130)
    maps, runs = {}, {}
    for skip in (False, True):
        spy = _counting(seg_model)
        out = tmp_path / f"pred_{skip}.tif"
        summary = predict_scene(spy, path, tile=64, overlap=16, semseg_path=str(out), progress=False,
                                quicklook=False, batch_size=3, skip_empty=skip, max_strip_width=max_strip_width)
        with rasterio.open(out) as src:
            maps[skip] = src.read(1)
        runs[skip] = spy.windows
        assert summary["windows"] == spy.windows + summary["skipped_windows"]
    assert np.array_equal(maps[True], maps[False])
    assert (maps[True] == 255).any() and (maps[True] != 255).any()
    assert runs[True] <= runs[False] - 5, runs  # 7 of 20 (5 of 28 in strips) windows without data not run


def test_skip_empty_must_be_a_bool():
    from d2geo.inference import InferenceOptions
    from d2geo.inference.request import SceneRequestError

    with pytest.raises(SceneRequestError, match="skip_empty"):
        InferenceOptions(skip_empty="no")


class _Reader:
    def __init__(self, n, log, fail_at=None):
        self.n, self.log, self.fail_at = n, log, fail_at
        self.batch2_read = threading.Event()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.fail_at:
            raise OSError(f"cannot read window {i}")
        self.log.append(("read", i))
        if i == 2:
            self.batch2_read.set()
        return i


def test_numpy_models_read_the_next_batch_while_the_model_runs():
    """With read-ahead the second batch is read while the first is with the model (the
    model waits for it here: without read-ahead it would wait in vain); order is kept."""
    from d2geo.inference.loop import _read_ahead

    log = []
    reader = _Reader(7, log)
    got = []
    for batch in _read_ahead(reader, 2, ahead=2):
        if not got:
            assert reader.batch2_read.wait(10), "the next batch was not read while the model ran"
        got.append(batch)
    assert got == [[0, 1], [2, 3], [4, 5], [6]]
    log.clear()
    reader = _Reader(7, log)
    gen = _read_ahead(reader, 2, ahead=0)
    assert next(gen) == [0, 1] and not reader.batch2_read.is_set()  # no read-ahead: read when asked


def test_a_read_error_ahead_reaches_the_caller():
    from d2geo.inference.loop import _read_ahead

    with pytest.raises(OSError, match="window 3"):
        list(_read_ahead(_Reader(6, [], fail_at=3), 2, ahead=2))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, seg_model):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from d2geo.inference.export_file import export_model_file

    path = str(tmp_path_factory.mktemp("levers") / "model.onnx")
    export_model_file(seg_model, path, None, gsd_m=10.0, window=64, overlap=16)
    return path


def test_a_model_file_run_reads_ahead_and_gives_the_same_class_map(model_file, tmp_path):
    from d2geo.inference import predict_scene
    from d2geo.inference.model_file import load_model

    path = _scene(tmp_path / "s.tif", 160, 160, nodata_cols=40)
    m = load_model(model_file, threads=1)
    maps = []
    for workers in (0, 1):
        out = tmp_path / f"p{workers}.tif"
        predict_scene(m, path, tile=64, overlap=16, semseg_path=str(out), progress=False, quicklook=False,
                      batch_size=2, num_workers=workers)
        with rasterio.open(out) as src:
            maps.append(src.read(1))
    assert np.array_equal(maps[0], maps[1])


def test_int8_model_file_keeps_the_metadata_and_quantizes_only_linear_layers(model_file, tmp_path):
    import onnx

    from d2geo.inference.model_file import graph_sha256, load_model, read_metadata
    from d2geo.inference.quantize import quantize_model_file

    dst = str(tmp_path / "model.int8.onnx")
    meta = quantize_model_file(model_file, dst)
    src = read_metadata(model_file)
    assert {k: v for k, v in meta.to_dict().items() if k != "graph_sha256"} == \
        {k: v for k, v in src.to_dict().items() if k != "graph_sha256"}
    assert meta.graph_sha256 == graph_sha256(dst) != src.graph_sha256
    ops = {n.op_type for n in onnx.load(dst).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    assert "ConvInteger" not in ops and "Conv" in ops  # convolutions stay float32
    assert os.path.getsize(dst) < os.path.getsize(model_file)
    rng = np.random.default_rng(0)
    x = (rng.random((6, 64, 64), np.float32) * 0.3).astype(np.float32)
    a = load_model(model_file)([{"image": x}])[0]["sem_seg"].argmax(0)
    b = load_model(dst)([{"image": x}])[0]["sem_seg"].argmax(0)
    assert (a == b).mean() > 0.9  # int8 changes some labels: measured, never assumed equal


def test_int8_refuses_to_overwrite_its_float32_file(model_file):
    from d2geo.inference.model_file import ModelFileError
    from d2geo.inference.quantize import quantize_model_file

    with pytest.raises(ModelFileError, match="another file"):
        quantize_model_file(model_file, model_file)


def test_runtime_onnxruntime_int8_runs_the_quantized_export(seg_model):
    """--runtime onnxruntime-int8: the export quantized (its logits differ from the float32
    export's, a little), with the model file's metadata."""
    pytest.importorskip("onnxruntime")
    from d2geo.inference.runtimes import RUNTIMES, prepare_runtime

    assert "onnxruntime-int8" in RUNTIMES
    x = (np.random.default_rng(1).random((6, 64, 64), np.float32) * 0.3).astype(np.float32)
    fp32, int8 = (prepare_runtime(seg_model, r, tile=64, overlap=16)([{"image": x}])[0]["sem_seg"]
                  for r in ("onnxruntime", "onnxruntime-int8"))
    assert fp32.shape == int8.shape == (4, 64, 64)
    diff = np.abs(fp32 - int8).max()
    assert 0 < diff < 0.5 * np.abs(fp32).max(), diff
