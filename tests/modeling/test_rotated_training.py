"""Oriented detection configs compose and train: the family configs (DINOv2, Prithvi,
Satlas' Swin stages) with a tiny encoder of their family, and the rotated quickstart, on
d2geo's synthetic ships and vehicles (rotated boxes) read through ``RotatedGeoDatasetMapper``;
the loss of a few steps on one fixed batch must fall."""
import pytest
import torch

pytest.importorskip("detectron2", reason="detectron2 is not installed: see README for installing it from source")
pytest.importorskip("rasterio", reason="the GeoTIFF reader needs rasterio")

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.modeling.proposal_generator.rrpn import RRPN  # noqa: E402
from detectron2.modeling.roi_heads import RROIHeads  # noqa: E402
from detectron2.structures import RotatedBoxes  # noqa: E402

from heads_tiny import HLS, falling, tiny_encoder, train_steps  # noqa: E402
from d2geo import model_zoo  # noqa: E402

CONFIGS = {"dinov2": "dinov2/rotated_rcnn_vitb14.py", "prithvi": "prithvi/rotated_rcnn_eo_v2_300_tl.py",
           "satlas": "satlas/rotated_rcnn_swinb.py"}


@pytest.fixture(scope="module")
def rotated_data(tmp_path_factory):
    """Tiny synthetic oriented-object sets (64 px tiles) under their own prefix, generated in a
    temporary folder."""
    import os

    from d2geo.data.synthetic.rotated import register_synthetic_rotated

    old = os.environ.get("D2GEO_DATASETS")
    os.environ["D2GEO_DATASETS"] = str(tmp_path_factory.mktemp("rotds"))
    try:
        names = register_synthetic_rotated("_rot_test", num_train=4, num_val=2, size=64, seed=3)
        from detectron2.data import DatasetCatalog

        DatasetCatalog.get(names[0])  # generate now, inside the temporary folder
        DatasetCatalog.get(names[1])
    finally:
        if old is None:
            os.environ.pop("D2GEO_DATASETS", None)
        else:
            os.environ["D2GEO_DATASETS"] = old
    return names


def _tiny(cfg, family, names, frames=1):
    hierarchical = "bottom_up" in cfg.model.backbone
    net = cfg.model.backbone.bottom_up if hierarchical else cfg.model.backbone.net
    assert net.pretrained is True and net.weights is None  # user configs load the family's weights
    if family == "prithvi":
        net.encoder_kwargs.num_frames = frames
    tiny_encoder(net)  # the family's tiny test variant, no weights
    net.encoder_kwargs.bands = list(HLS)  # DINOv2 too: all six bands
    cfg.model.pixel_mean = [0.15] * 6
    cfg.model.pixel_std = [0.1] * 6
    cfg.model.backbone.out_channels = 32
    cfg.model.proposal_generator.head.in_channels = 32
    cfg.model.roi_heads.box_head.input_shape.channels = 32
    cfg.model.roi_heads.box_head.conv_dims = [32]
    cfg.model.roi_heads.box_head.fc_dims = [64]
    cfg.model.roi_heads.box_predictor.input_shape.channels = 64
    cfg.model.roi_heads.batch_size_per_image = 32
    cfg.model.roi_heads.num_classes = 2
    # rotated NMS on the CPU is quadratic in the candidates: few per level keep a step fast
    cfg.model.proposal_generator.pre_nms_topk = (30, 30)
    cfg.model.proposal_generator.post_nms_topk = (30, 30)
    cfg.dataloader.train.dataset.names = names[0]
    cfg.dataloader.train.mapper.bands = list(HLS)
    cfg.dataloader.train.total_batch_size = 2
    cfg.dataloader.train.num_workers = 0
    return cfg


@pytest.mark.parametrize("family", [pytest.param("satlas", marks=pytest.mark.slow), "dinov2", "prithvi"])
def test_rotated_family_config_trains_on_rotated_boxes(family, rotated_data, tmp_path):
    torch.manual_seed(0)
    cfg = LazyConfig.apply_overrides(model_zoo.get_config(CONFIGS[family]), [f"train.output_dir={tmp_path}"])
    cfg = _tiny(cfg, family, rotated_data)
    model = instantiate(cfg.model)
    assert isinstance(model.proposal_generator, RRPN) and isinstance(model.roi_heads, RROIHeads)
    batch = next(iter(instantiate(cfg.dataloader.train)))
    if family == "prithvi":  # one date of the synthetic tiles as a 1-frame series
        for b in batch:
            b["image"] = b["image"][:, None]
    assert isinstance(batch[0]["instances"].gt_boxes, RotatedBoxes)
    model, totals = train_steps(cfg, steps=8, lr=2e-3, model=model, batch=batch)
    assert falling(totals), totals
    model.eval()
    with torch.no_grad():
        out = model(batch[:1])[0]["instances"]
    assert isinstance(out.pred_boxes, RotatedBoxes) and out.pred_boxes.tensor.shape[1] == 5


def test_rotated_quickstart_composes_and_its_loss_falls(rotated_data, tmp_path):
    cfg = LazyConfig.apply_overrides(model_zoo.get_config("quickstart/rotated_tiny.py"),
                                     [f"train.output_dir={tmp_path}"])
    assert cfg.dataloader.train.dataset.names == "d2geo_synth_rot_train"
    assert cfg.dataloader.evaluator._target_.__name__ == "RotatedCOCOEvaluator"
    net = cfg.model.backbone.net
    net.encoder_kwargs = dict(net.encoder_kwargs, embed_dim=48, depth=2, img_size=64)
    cfg.dataloader.train.dataset.names = rotated_data[0]
    cfg.dataloader.train.total_batch_size = 2
    cfg.model.proposal_generator.pre_nms_topk = (30, 30)
    cfg.model.proposal_generator.post_nms_topk = (30, 30)
    model, totals = train_steps(cfg, steps=8, lr=2e-3)
    assert falling(totals), totals
    evaluator = instantiate(LazyConfig.apply_overrides(cfg, [f"dataloader.evaluator.dataset_name={rotated_data[1]}"])
                            .dataloader.evaluator)
    model.eval()
    test = LazyConfig.apply_overrides(cfg, [f"dataloader.test.dataset.names={rotated_data[1]}"]).dataloader.test
    from detectron2.evaluation import inference_on_dataset

    res = inference_on_dataset(model, instantiate(test), evaluator)
    assert "AP50" in res["bbox"]  # RotatedCOCOEvaluator ran on rotated IoU (the value of 8 steps is noise)
