"""The Panoptic FPN configs (quickstart, Prithvi time series, DINOv2) compose, train a few
steps with falling loss on tiny synthetic crop-field tiles, and evaluate panoptic quality."""
from __future__ import annotations

import pytest

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio")
pytest.importorskip("torchmetrics", reason="the panoptic evaluator needs torchmetrics (pip install 'd2geo[panoptic]')")

from detectron2.config import LazyConfig, instantiate  # noqa: E402

from helpers import tiny_rcnn_heads  # noqa: E402
from heads_tiny import falling, tiny_encoder, train_steps  # noqa: E402
from d2geo import model_zoo  # noqa: E402
from d2geo.modeling import GeoPanopticFPN, find_geo_backbones  # noqa: E402


@pytest.fixture(scope="module")
def pan_data(tmp_path_factory):
    """Tiny synthetic panoptic sets (64 px), one-date and four-date: ``{frames: prefix}``."""
    from d2geo.data.synthetic.panoptic import register_synthetic_panoptic

    with pytest.MonkeyPatch.context() as m:
        m.setenv("D2GEO_DATASETS", str(tmp_path_factory.mktemp("pan_datasets")))
        out = {}
        for frames in (1, 4):
            register_synthetic_panoptic(f"_pan_t{frames}", num_train=2, num_val=1, size=64, num_frames=frames, seed=3)
            out[frames] = f"_pan_t{frames}"
        # generate now, while D2GEO_DATASETS points at the temporary folder
        from detectron2.data import DatasetCatalog

        for p in out.values():
            DatasetCatalog.get(f"{p}_train"), DatasetCatalog.get(f"{p}_val")
        yield out


def _batch_and_train(cfg, steps=10, lr=2e-3):
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert all("sem_seg" in x and len(x["instances"]) > 0 for x in batch)
    model, totals = train_steps(cfg, steps=steps, lr=lr, model=instantiate(cfg.model), batch=batch)
    return model, totals


@pytest.mark.parametrize("name", ["quickstart/panoptic_tiny.py", "quickstart/panoptic_upernet_tiny.py"])
def test_panoptic_quickstart_trains_and_evaluates(name, pan_data, tmp_path, one_thread):
    from detectron2.evaluation import inference_on_dataset

    cfg = LazyConfig.apply_overrides(model_zoo.get_config(name), [f"train.output_dir={tmp_path}"])
    assert cfg.model._target_ is GeoPanopticFPN
    assert cfg.model.sem_seg_head.num_classes == 5 and cfg.model.roi_heads.num_classes == 3
    assert cfg.model.sem_seg_head._target_.__name__ == ("UperNetHead" if "upernet" in name else "SemSegFPNHead")
    cfg.model.backbone.net.encoder_kwargs.img_size = 64
    cfg.dataloader.train.dataset.names = "_pan_t1_train"
    cfg.dataloader.test.dataset.names = "_pan_t1_val"
    cfg.dataloader.train.total_batch_size = 2
    model, totals = _batch_and_train(cfg)
    assert falling(totals), totals
    # evaluation: the model's panoptic_seg against the val split's ground truth
    model.eval()
    model.combine_instances_score_thresh = 0.0  # an untrained model: let some instances through
    res = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    pq = res["panoptic_seg"]
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"} <= set(pq)
    assert 0.0 <= pq["PQ"] <= 100.0


@pytest.mark.parametrize("name, frames", [("prithvi/panoptic_fpn_eo_v2_300_tl.py", 4),
                                          ("dinov2/panoptic_fpn_vitb14.py", 1)])
def test_family_panoptic_config_trains_on_synthetic_fields(name, frames, pan_data, tmp_path, one_thread):
    cfg = LazyConfig.apply_overrides(model_zoo.get_config(name), [f"train.output_dir={tmp_path}"])
    net = cfg.model.backbone.net
    assert net.pretrained is True and net.weights is None  # the published weights, by name
    bands = tiny_encoder(net)  # the family's tiny test variant, no weights
    cfg.model.pixel_mean = [0.1] * len(bands)
    cfg.model.pixel_std = [0.1] * len(bands)
    tiny_rcnn_heads(cfg.model)
    cfg.model.sem_seg_head.conv_dims = 32
    cfg.model.sem_seg_head.norm = ""
    cfg.model.roi_heads.num_classes = 3
    cfg.model.sem_seg_head.num_classes = 5
    cfg.dataloader.train.dataset.names = f"{pan_data[frames]}_train"
    cfg.dataloader.train.mapper.bands = bands
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    model, totals = _batch_and_train(cfg)
    assert falling(totals), totals
    (backbone,) = find_geo_backbones(model)
    if frames > 1:
        assert backbone.temporal_fold == "concat"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.encoder.parameters())


@pytest.mark.slow
def test_panoptic_quickstart_pixel_stats_match_the_data(tmp_path, monkeypatch):
    """The quickstart's pixel_mean / pixel_std are the train split's per-band statistics."""
    import numpy as np

    from d2geo.data.geotiff import read_geotiff
    from d2geo.data.synthetic.panoptic import PANOPTIC_PARAMS, _samples

    monkeypatch.setenv("D2GEO_DATASETS", str(tmp_path))
    total, total_sq, count = np.zeros(6), np.zeros(6), 0
    for image, _, _ in _samples("_pan_stats", dict(PANOPTIC_PARAMS), "train"):
        a = read_geotiff(image).image.astype(np.float64).reshape(6, -1)
        total, total_sq, count = total + a.sum(1), total_sq + (a ** 2).sum(1), count + a.shape[1]
    mean = total / count
    std = np.sqrt(total_sq / count - mean ** 2)
    cfg = model_zoo.get_config("quickstart/panoptic_tiny.py")
    assert np.allclose(cfg.model.pixel_mean, mean, atol=1e-3)
    assert np.allclose(cfg.model.pixel_std, std, atol=1e-3)


def test_synthetic_panoptic_prefix_with_other_parameters_is_refused(pan_data):
    from d2geo.data.synthetic.panoptic import register_synthetic_panoptic

    assert register_synthetic_panoptic("_pan_t1", num_train=2, num_val=1, size=64, num_frames=1, seed=3) == [
        "_pan_t1_train", "_pan_t1_val"]
    with pytest.raises(ValueError, match=r"'_pan_t1' is already registered with other parameters"):
        register_synthetic_panoptic("_pan_t1", num_train=3)
