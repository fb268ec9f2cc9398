"""The units check (d2geo.data.units) runs in predict_scene and predict_region before any window
reaches the model (issue 26, item 2): a scene in digital numbers fed to a model of reflectance
statistics is refused; --skip-units-check (units_check=False) only warns."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed")
rasterio = pytest.importorskip("rasterio")
from d2geo.data import units  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from d2geo.data.synthetic.generator import render_tile, write_geotiff  # noqa: E402
from d2geo.inference import InferenceOptions, predict_scene  # noqa: E402
from d2geo.inference.region import predict_region  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")


class _Counting(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0
        self.pixel_mean, self.pixel_std, self.sem_seg_head = inner.pixel_mean, inner.pixel_std, inner.sem_seg_head

    def forward(self, batched_inputs):
        self.calls += 1
        return self.inner(batched_inputs)


@pytest.fixture(scope="module")
def model():
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    return instantiate(LazyConfig.load(SEG).model).eval()


def _scenes(folder):
    rng = np.random.default_rng(0)
    refl = np.concatenate([render_tile(rng, 64, 64, cloud_prob=0.0, nodata_prob=0.0)[0][0] for _ in range(2)], 2)
    t = from_origin(500000, 4200000, 10, 10)
    write_geotiff(str(folder / "refl.tif"), refl, transform=t)
    with rasterio.open(folder / "refl.tif") as src:  # int16 reflectance x 10 000 with a scale tag of 1e-4
        dn, profile = src.read(), src.profile
    with rasterio.open(folder / "dn.tif", "w", **profile) as dst:  # the same numbers, the scale tag lost
        dst.write(dn)
    return str(folder / "refl.tif"), str(folder / "dn.tif")


def test_a_scene_in_digital_numbers_is_refused_before_any_window(model, tmp_path):
    refl, dn = _scenes(tmp_path)
    m = _Counting(model)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(units.UnitsError, match="dn_scale"):
        predict_scene(m, dn, semseg_path=str(out / "dn.tif"), tile=64, overlap=16, progress=False, quicklook=False)
    with pytest.raises(units.UnitsError, match="dn_scale"):
        predict_region(m, [dn], str(out), InferenceOptions(tile=64, overlap=16, num_workers=0, cog_blocksize=128),
                       progress=False)
    assert m.calls == 0 and not (out / "dn.tif").exists()
    predict_scene(m, refl, semseg_path=str(out / "refl.tif"), tile=64, overlap=16, progress=False, quicklook=False)
    predict_scene(m, dn, semseg_path=str(out / "dn.tif"), tile=64, overlap=16, scale=1e-4, progress=False,
                  quicklook=False)  # the fix the message names
    with rasterio.open(out / "refl.tif") as a, rasterio.open(out / "dn.tif") as b:
        assert (a.read(1) == b.read(1)).mean() > 0.999
    predict_scene(m, dn, semseg_path=str(out / "dn_anyway.tif"), tile=64, overlap=16, units_check=False,
                  progress=False, quicklook=False)  # switched off: a warning, and the run goes on
    assert (out / "dn_anyway.tif").exists()


def test_the_tools_refuse_with_one_error_line_and_skip_units_check_goes_on(model, tmp_path):
    from d2geo.cli import tool_module as load_tool

    _, dn = _scenes(tmp_path)
    weights = str(tmp_path / "w.pth")
    torch.save({"model": model.state_dict()}, weights)
    out = tmp_path / "out"
    out.mkdir()
    args = ["--config-file", SEG, "--weights", weights, "--scene", dn, "--out-semseg", str(out / "p.tif"), "--tile",
            "64", "--overlap", "16", "--no-progress", "--no-quicklook"]
    with pytest.raises(SystemExit, match=r"^predict_scene: error: .*dn_scale"):
        load_tool("predict_scene").main(args)
    assert os.listdir(out) == []
    load_tool("predict_scene").main(args + ["--skip-units-check"])
    assert (out / "p.tif").exists()
    with pytest.raises(SystemExit, match=r"^predict_region: error: .*dn_scale"):
        load_tool("predict_region").main(["--config-file", SEG, "--weights", weights, "--scenes", dn, "--output-dir",
                                          str(tmp_path / "region"), "--tile", "64", "--overlap", "16",
                                          "--no-progress", "--num-workers", "0"])
    assert not (tmp_path / "region").exists()
