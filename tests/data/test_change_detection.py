"""Synthetic bi-temporal change set and the change-detection quickstart config."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio", reason="the GeoTIFF writer needs rasterio")

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from d2geo import model_zoo  # noqa: E402
from d2geo.data.synthetic import generator as sg  # noqa: E402
from d2geo.data.synthetic.change import CHANGE_CLASSES, make_change_dataset, render_change_pair  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _buildings_of(seed_rng_state, size=64):
    """The buildings the pair generator draws for the next tile of an rng in this state."""
    rng = np.random.default_rng()
    rng.bit_generator.state = seed_rng_state
    seed = int(rng.integers(2**31))
    _, _, buildings = sg.render_tile(np.random.default_rng(seed), size, size, num_frames=2, day_of_year=(150, 240),
                                     cloud_prob=0.0, nodata_prob=0.0, mixed_land_cover=False)
    return buildings


def test_change_pair_labels_exactly_the_changed_objects():
    quiet = dict(cloud_prob=0.0, nodata_prob=0.0, p_clear_field=0.0, p_plant_field=0.0)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        none, c, info = render_change_pair(rng, 64, p_demolish=0.0, p_new=0.0, **quiet)
        assert (c == 0).all() and info["demolished"] == info["new"] == 0
    hits = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        buildings = _buildings_of(rng.bit_generator.state)
        stack, change, info = render_change_pair(rng, 64, p_demolish=1.0, p_new=0.0, **quiet)
        footprint = np.zeros((64, 64), np.uint8)
        for b in buildings:
            cv2.fillPoly(footprint, [np.round(b.polygon()).astype(np.int32)], 1)
        assert info["demolished"] == len(buildings)
        np.testing.assert_array_equal(change, footprint)  # every building gone, nothing else
        if footprint.any():
            hits += 1
            roof = sg.SIGNATURES["building"]
            on = footprint.astype(bool)
            # date 1 shows roofs (close to the roof spectrum), date 2 what was under them
            d1 = np.abs(stack[0][:, on].mean(1) - roof).mean()
            d2 = np.abs(stack[1][:, on].mean(1) - roof).mean()
            assert d1 < d2
    assert hits >= 3
    # field changes
    counts = {"cleared": 0, "planted": 0}
    for seed in range(10):
        _, change, info = render_change_pair(np.random.default_rng(seed), 64, p_demolish=0.0, p_new=0.0,
                                             p_clear_field=1.0, p_plant_field=1.0, cloud_prob=0.0, nodata_prob=0.0)
        counts["cleared"] += info["cleared"]
        counts["planted"] += info["planted"]
        assert change.any() == bool(info["cleared"] or info["planted"])
    assert counts["cleared"] > 0 and counts["planted"] > 0


@pytest.fixture(scope="module")
def change_data(tmp_path_factory):
    from d2geo.data.datasets import register_geo_semseg

    root = tmp_path_factory.mktemp("change")
    ds = make_change_dataset(root, num_train=4, num_val=2, size=64, seed=3)
    assert all(len(f) == 2 for f in ds.splits["train"])
    for split in ("train", "val"):
        name = f"_change_test_{split}"
        if name not in DatasetCatalog.list():
            register_geo_semseg(name, [(f, ds.mask_file(split, f)) for f in ds.splits[split]],
                                stuff_classes=list(CHANGE_CLASSES), geo=dict(band_names=sg.HLS_BANDS, sensor="hls"))
    return "_change_test"


def _tiny(fold: str, prefix: str, tmp_path):
    cfg = model_zoo.get_config("quickstart/change_diff_tiny.py")
    cfg = LazyConfig.apply_overrides(cfg, [f"train.output_dir={tmp_path}"])
    net = cfg.model.backbone.net
    net.temporal_fold = fold
    net.encoder_kwargs = {**net.encoder_kwargs, "embed_dim": 48, "depth": 2}
    cfg.model.backbone.out_channels = 32
    cfg.model.sem_seg_head.conv_dims = 32
    cfg.dataloader.train.dataset.names = f"{prefix}_train"
    cfg.dataloader.train.total_batch_size = 2
    return cfg


@pytest.mark.parametrize("fold", ["diff", "concat"])
def test_change_config_trains(fold, change_data, tmp_path):
    from heads_tiny import falling, train_steps

    cfg = _tiny(fold, change_data, tmp_path)
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert batch[0]["image"].shape[:2] == (6, 2)
    assert set(torch.unique(batch[0]["sem_seg"]).tolist()) <= {0, 1, 255}
    model, totals = train_steps(cfg, steps=12, lr=3e-3, batch=batch)
    assert model.backbone.net.temporal_fold == fold
    assert model.backbone.net.output_shape()["layer1"].channels == (48 if fold == "diff" else 96)
    assert falling(totals), totals


def test_change_config_is_the_packaged_one():
    cfg = model_zoo.get_config("quickstart/change_diff_tiny.py")
    assert cfg.model.backbone.net.temporal_fold == "diff"
    assert cfg.model.backbone.net.encoder_kwargs["num_frames"] == 2
    assert cfg.model.sem_seg_head.num_classes == 2
    assert cfg.dataloader.train.dataset.names == "d2geo_synth_change_train"
    assert "d2geo_synth_change_val" in DatasetCatalog.list()
    assert MetadataCatalog.get("d2geo_synth_change_val").stuff_classes == list(CHANGE_CLASSES)
