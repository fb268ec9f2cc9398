"""The units check before the first training step (d2geo.engine.units_check): tools/train_net.py
and GeoTrainer refuse training data whose magnitude does not fit the model's statistics, and go
on (with a warning) when the check is switched off."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")

from d2geo.data.mapper import GeoDatasetMapper  # noqa: E402
from d2geo.data.synthetic import synthetic_pixel_stats  # noqa: E402
from d2geo.data.units import UnitsError  # noqa: E402
from d2geo.engine.units_check import check_training_units  # noqa: E402
from helpers import write_tif  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEG = os.path.join(ROOT, "configs", "quickstart", "semantic_fpn_tiny.py")
HLS = ["blue", "green", "red", "nir_narrow", "swir_1", "swir_2"]


def _train_net():
    """The training tool's parser (d2geo.cli.train) and per-process run (d2geo.engine.train_loop)."""
    from d2geo.cli import train as cli
    from d2geo.engine import train_loop

    return cli, train_loop


@pytest.fixture(scope="module", autouse=True)
def synthetic_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as m:
        m.setenv("D2GEO_DATASETS", str(tmp_path_factory.getbasetemp() / "d2geo_datasets"))
        yield


class _Model(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(std).view(-1, 1, 1), False)


def _dn_dataset(tmp_path, n=3):
    rng = np.random.default_rng(0)
    mean, std = synthetic_pixel_stats()
    dicts = []
    for i in range(n):
        refl = rng.normal(np.array(mean)[:, None, None], np.array(std)[:, None, None], (6, 32, 32))
        dn = np.clip(refl * 10_000, 1, 10_000).astype(np.uint16)
        dn[:, :4] = 0  # nodata rows
        dicts.append({"file_name": write_tif(tmp_path / f"s{i}.tif", dn, names=HLS, nodata=0)})
    return dicts, (mean, std)


def test_dn_training_data_are_refused_against_reflectance_statistics(tmp_path, caplog):
    dicts, (mean, std) = _dn_dataset(tmp_path)
    model = _Model(mean, std)
    with pytest.raises(UnitsError) as e:
        check_training_units(model, dicts, GeoDatasetMapper(is_train=True))
    msg = str(e.value)
    assert "the training dataset (its first 3 samples: s0.tif, s1.tif, s2.tif)" in msg
    assert "dn_scale=0.0001" in msg and "train.units_check=False" in msg
    # read with the scale: passes; the mapper's own normalization is what counts when it has one
    assert check_training_units(model, dicts, GeoDatasetMapper(is_train=True, scale=1e-4)).ok
    with pytest.raises(UnitsError):
        check_training_units(_Model([0.0] * 6, [1.0] * 6), dicts, GeoDatasetMapper(is_train=True, mean=mean, std=std))
    # switched off: a warning, and the report
    with caplog.at_level(logging.WARNING, logger="d2geo.data.units"):
        report = check_training_units(model, dicts, GeoDatasetMapper(is_train=True), enabled=False)
    assert report.allowed and "dn_scale=0.0001" in caplog.text


def test_train_net_stops_before_the_first_step_on_unscaled_data(tmp_path, monkeypatch):
    """The quickstart's synthetic tiles store reflectance x 10 000 with a 0.0001 scale; read with
    scale=1 they are DN against the config's reflectance statistics."""
    cli, train_net = _train_net()
    monkeypatch.setattr(train_net, "do_test", lambda cfg, model: {})  # no final evaluation: not the point here
    def args(out):
        return ["--config-file", SEG, f"train.output_dir={out}", "train.max_iter=1", "train.eval_period=0",
                "train.log_period=1", "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
                "dataloader.train.mapper.scale=1"]

    out = tmp_path / "refused"
    with pytest.raises(UnitsError, match="dn_scale=0.0001"):
        train_net.run(cli.get_parser().parse_args(args(out)))
    assert not (out / "metrics.json").exists() and not (out / "model_final.pth").exists()
    ok = tmp_path / "skipped"
    train_net.run(cli.get_parser().parse_args(["--skip-units-check", *args(ok)]))
    assert (ok / "model_final.pth").exists()
    with open(ok / "log.txt") as f:
        assert "units check was switched off" in f.read()


def test_geo_trainer_checks_units_before_training(tmp_path):
    from detectron2.config import get_cfg

    from d2geo.engine import GeoTrainer
    from d2geo.modeling import add_d2geo_config
    import d2geo.data.synthetic  # noqa: F401  (registers d2geo_synth_*)

    mean, std = synthetic_pixel_stats()
    yaml = tmp_path / "seg.yaml"
    yaml.write_text(f"""
MODEL:
  META_ARCHITECTURE: GeoSemanticSegmentor
  DEVICE: cpu
  PIXEL_MEAN: {list(mean)}
  PIXEL_STD: {list(std)}
  BACKBONE: {{NAME: build_geo_vit_sfp_backbone}}
  FPN: {{OUT_CHANNELS: 16}}
  D2GEO:
    ENCODER: dinov2_vits14
    ENCODER_KWARGS: {{embed_dim: 24, depth: 1, num_heads: 2, patch_size: 8, img_size: 96, bands: {HLS}}}
    SCALE_FACTORS: [2.0, 1.0, 0.5]
    TOP_BLOCK: False
  SEM_SEG_HEAD: {{NAME: SemSegFPNHead, IN_FEATURES: [p2, p3, p4], NUM_CLASSES: 4, CONVS_DIM: 16, COMMON_STRIDE: 4, NORM: ""}}
INPUT: {{MIN_SIZE_TRAIN: [96], MAX_SIZE_TRAIN: 96, MIN_SIZE_TEST: 96, MAX_SIZE_TEST: 96, GEO: {{SCALE: 1.0}}}}
DATASETS: {{TRAIN: [d2geo_synth_seg_train], TEST: []}}
DATALOADER: {{NUM_WORKERS: 0}}
SOLVER: {{IMS_PER_BATCH: 2, BASE_LR: 0.001, MAX_ITER: 1, CHECKPOINT_PERIOD: 1000, WARMUP_ITERS: 0, STEPS: []}}
TEST: {{EVAL_PERIOD: 0}}
""")
    cfg = get_cfg()
    add_d2geo_config(cfg)
    cfg.merge_from_file(str(yaml))
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    trainer = GeoTrainer(cfg)
    with pytest.raises(UnitsError, match="dn_scale=0.0001"):
        trainer.train()
    assert trainer.iter == 0
    cfg.defrost()
    cfg.INPUT.GEO.UNITS_CHECK = False
    trainer = GeoTrainer(cfg)
    trainer.train()
    assert trainer.iter == 1
