"""The prediction tools log the licenses of the encoder weights once per run (issue 23), from the
checkpoint (config runs) or from the model file (--model runs); non-commercial ones say so."""
import logging
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs/quickstart/semantic_fpn_tiny.py")
TINY = ["model.backbone.net.encoder_kwargs.depth=2", "model.backbone.net.encoder_kwargs.embed_dim=48"]
BANDS = ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"]
RECORD = {"encoder": "scale_mae_vitl16", "source": "https://example.org/scalemae.pth", "sha256": None,
          "license": "CC-BY-NC-4.0"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("detectron2")
    pytest.importorskip("onnx")
    import torch
    from detectron2.config import LazyConfig, instantiate

    from d2geo.encoders.licenses import PROVENANCE_ATTR
    from d2geo.inference.export_file import export_model_file
    from helpers.rasters import write_tif

    d = tmp_path_factory.mktemp("licenses")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), TINY)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    setattr(model, PROVENANCE_ATTR, [dict(RECORD)])  # as a model trained from Scale-MAE's weights carries it
    ckpt = str(d / "model.pth")
    torch.save({"model": model.state_dict(), "weights_licenses": [dict(RECORD)]}, ckpt)
    onnx_path = str(d / "model.onnx")
    export_model_file(model, onnx_path, cfg, window=64, overlap=16, gsd_m=30.0)
    rng = np.random.default_rng(0)
    mean = np.array([0.104, 0.1243, 0.1189, 0.2412, 0.2238, 0.1556], np.float32)[:, None, None]
    scene = write_tif(str(d / "in" / "scene.tif"), (mean + rng.normal(0, 0.03, (6, 96, 96))).astype(np.float32),
                      names=BANDS)
    return {"ckpt": ckpt, "onnx": onnx_path, "scene": scene}


def _license_lines(caplog):
    return [r for r in caplog.records if "encoder weights of" in r.getMessage()]


@pytest.mark.parametrize("tool", ["predict_scene", "predict_region"])
@pytest.mark.parametrize("how", ["config", "model_file"])
def test_prediction_tools_log_the_weights_license_once(trained, tmp_path, caplog, tool, how):
    import importlib

    main = importlib.import_module(f"d2geo.cli.{tool}").main
    if how == "config":
        args = ["--config-file", CONFIG, "--weights", trained["ckpt"], "--tile", "64", "--overlap", "16"]
        extra = TINY
    else:
        args, extra = ["--model", trained["onnx"]], []
    if tool == "predict_scene":
        args += ["--scene", trained["scene"], "--out-semseg", str(tmp_path / "pred.tif")]
    else:
        args += ["--scenes", trained["scene"], "--output-dir", str(tmp_path / "region")]
        if how == "config":
            args += ["--num-workers", "0", "--device", "cpu"]
    caplog.set_level(logging.INFO)
    main([*args, "--no-progress", *extra])
    lines = _license_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    msg = lines[0].getMessage()
    assert "scale_mae_vitl16" in msg and "CC-BY-NC-4.0" in msg and "non-commercial use only" in msg
    assert lines[0].levelno == logging.WARNING


def test_a_model_without_published_weights_says_so_once(tmp_path, caplog):
    from d2geo.encoders.licenses import log_weights_licenses

    caplog.set_level(logging.INFO)
    assert log_weights_licenses([], "m.onnx") == [r.getMessage() for r in _license_lines(caplog)]
    assert "no published weights recorded" in caplog.text
    caplog.clear()
    lines = log_weights_licenses([{"encoder": "dinov2_vits14", "source": "hub", "license": "Apache-2.0"}], "m.onnx")
    assert len(lines) == 1 and "Apache-2.0" in lines[0] and "non-commercial" not in lines[0]
    assert _license_lines(caplog)[0].levelno == logging.INFO
