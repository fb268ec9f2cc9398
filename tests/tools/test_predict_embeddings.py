"""predict_region --embeddings with a model from a config + checkpoint (the encoder inside the
detectron2 model) on a real TerraMind example tile (Sentinel-2 L2A)."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch

from helpers import TERRAMIND_EXAMPLES

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
rasterio = pytest.importorskip("rasterio")
S2 = os.path.join(TERRAMIND_EXAMPLES, "S2L2A")
if not os.path.isdir(S2):
    pytest.skip(f"the TerraMind example tiles are not in {TERRAMIND_EXAMPLES}", allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")
L2A = "B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12"
BANDS = "B02,B03,B04,B8A,B11,B12"  # the quickstart model's blue, green, red, nir_narrow, swir_1, swir_2
TILE = sorted(glob.glob(os.path.join(S2, "*.tif")))[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    model = instantiate(LazyConfig.load(SEG).model)  # random weights
    path = str(tmp_path_factory.mktemp("w") / "seg.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


def _tool():
    from d2geo.cli import tool_module as load_tool

    return load_tool("predict_region")


def _args(weights, out, *extra):
    return ["--config-file", SEG, "--weights", weights, "--scenes", TILE, "--output-dir", str(out),
            "--band-names", L2A, "--bands", BANDS, "--dn-scale", "0.0001", "--tile", "224", "--overlap", "0",
            "--num-workers", "0", "--amp", "off", "--no-progress", "--embeddings", *extra]


def test_embeddings_of_a_config_and_checkpoint_model_equal_its_encoder_on_the_tile(weights, tmp_path):
    from d2geo.data.geotiff import read_geotiff
    from d2geo.tools_support import load_model

    out = tmp_path / "out"
    s = _tool().main(_args(weights, out, "--embeddings-pool", "2", "--embeddings-format", "cog,parquet"))
    sid = os.path.basename(TILE)[:-4]
    assert s["done"] == [sid]
    with rasterio.open(str(out / f"{sid}.emb.tif")) as emb, rasterio.open(TILE) as src:
        got = emb.read()
        assert emb.crs == src.crs and emb.transform == src.transform * src.transform.scale(16)  # patch 8 x pool 2
    model, _ = load_model(SEG, weights)
    sample = read_geotiff(TILE, bands=BANDS.split(","), band_names=L2A.split(","), scale=1e-4)
    x = (torch.as_tensor(sample.image)[None].float() - model.pixel_mean.view(1, -1, 1, 1)) / \
        model.pixel_std.view(1, -1, 1, 1)
    with torch.no_grad():
        f = model.backbone.net.encoder.forward_features(x, layers=[-1], norm=True)[0]
        want = torch.nn.functional.avg_pool2d(f, 2)[0].numpy()
    assert got.shape == want.shape == (96, 14, 14)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    gpd = pytest.importorskip("geopandas")
    df = gpd.read_parquet(str(out / f"{sid}.emb.parquet"))
    assert len(df) == 14 * 14 and df.crs == emb.crs
    # a rerun skips the scene; other embedding options redo it
    assert _tool().main(_args(weights, out, "--embeddings-pool", "2", "--embeddings-format", "cog,parquet"))[
        "skipped"] == [sid]
    s = _tool().main(_args(weights, out, "--embeddings-pool", "2", "--embeddings-pca", "8"))
    assert s["done"] == [sid] and os.path.isfile(out / "pca.npz")
    with rasterio.open(str(out / f"{sid}.emb.tif")) as emb:
        assert emb.count == 8
    assert json.load(open(out / "manifest.json"))["embeddings"]["pca"] == 8


def test_bad_embedding_flags_name_the_fix(weights, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"pool 3 does not divide the window's 28 x 28 patch grid"):
        _tool().main(_args(weights, out, "--embeddings-pool", "3"))
    with pytest.raises(SystemExit, match=r"layer index 9 is out of range for an encoder with 4 blocks"):
        _tool().main(_args(weights, out, "--embeddings-layer", "9"))
    with pytest.raises(SystemExit, match=r"--embeddings-pca 500 is more than the 96 dimensions"):
        _tool().main(_args(weights, out, "--embeddings-pca", "500"))
    with pytest.raises(SystemExit, match=r"--embeddings-pca is an option of --embeddings"):
        _tool().main([a for a in _args(weights, out, "--embeddings-pca", "4") if a != "--embeddings"])
    assert not os.path.exists(out) or not glob.glob(str(out / "*.emb.*"))


def test_embeddings_refuse_a_model_file_another_runtime_and_several_processes():
    import argparse

    from d2geo.cli.embeddings_args import embedding_options

    args = _tool().build_parser().parse_args(_args("w.pth", "out"))
    assert embedding_options(args).pool == 1
    for change, message in ((dict(model="m.onnx"), "not --model"), (dict(runtime="onnxruntime"), "drop --runtime"),
                            (dict(num_gpus=2), "runs in one process")):
        with pytest.raises(SystemExit, match=message):
            embedding_options(argparse.Namespace(**{**vars(args), **change}))
