"""Scenes smaller than the tile: the window shrinks to the scene, so the model pads the scene as
its own input pipeline does (normalized zeros), never with raw zeros that are not data
(issue 26, item 9)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed")
rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

from d2geo.data.geotiff import read_geotiff  # noqa: E402
from d2geo.data.synthetic.generator import render_tile, write_geotiff  # noqa: E402
from d2geo.inference import predict_scene  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")


@pytest.fixture(scope="module")
def seg_model():
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    return instantiate(LazyConfig.load(SEG).model).eval()  # random weights: every pixel of context counts


def _chip(path, h, w, seed=3):
    rng = np.random.default_rng(seed)
    rows = [np.concatenate([render_tile(rng, 64, 64, cloud_prob=0.0, nodata_prob=0.0)[0][0] for _ in range(4)], 2)
            for _ in range(4)]
    write_geotiff(str(path), np.concatenate(rows, 1)[:, :h, :w], transform=from_origin(500000, 4200000, 10, 10))
    return str(path)


class _Spy(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.shapes = inner, []
        self.pixel_mean = inner.pixel_mean
        self.sem_seg_head = inner.sem_seg_head

    def forward(self, batched_inputs):
        self.shapes += [tuple(d["image"].shape) for d in batched_inputs]
        return self.inner(batched_inputs)


def test_a_chip_smaller_than_the_tile_equals_the_model_on_the_whole_chip(seg_model, tmp_path):
    path = _chip(tmp_path / "chip.tif", 224, 224)
    s = read_geotiff(path)
    with torch.no_grad():
        ref = seg_model([{"image": torch.as_tensor(s.image), "height": 224, "width": 224}])[0]["sem_seg"].argmax(0)
    out = tmp_path / "pred.tif"
    spy = _Spy(seg_model)
    predict_scene(spy, path, tile=256, overlap=64, semseg_path=str(out), progress=False, quicklook=False)
    with rasterio.open(out) as src:
        got = src.read(1)
    assert spy.shapes == [(6, 224, 224)]  # one window, the chip itself (was 256 x 256, raw 0 beyond the chip)
    assert (got == ref.numpy()).mean() >= 0.999  # 0.969 with the window padded by raw zeros


def test_windows_never_reach_past_the_scene_edge(seg_model, tmp_path):
    path = _chip(tmp_path / "strip.tif", 90, 33)
    spy = _Spy(seg_model)
    predict_scene(spy, path, tile=64, overlap=16, semseg_path=str(tmp_path / "p.tif"), progress=False,
                  quicklook=False, batch_size=2)
    assert spy.shapes == [(6, 64, 33), (6, 64, 33)]  # two rows of windows, shrunk to the 33 columns
    with rasterio.open(tmp_path / "p.tif") as src:
        assert (src.read(1) != 255).all()
