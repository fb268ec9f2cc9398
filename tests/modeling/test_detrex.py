"""detrex's DINO on tiles with fewer encoder tokens than its queries: refused with the fix,
and runs once the queries are sized to the tile."""
import os

import pytest
import torch

pytest.importorskip("detectron2")
pytest.importorskip("detrex", reason="detrex is not installed (optional)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def dino():
    from d2geo.modeling.detrex import detrex_projects_root
    if detrex_projects_root() is None:
        pytest.skip("detrex is installed but not from a checkout with projects/dino")
    from detectron2.config import LazyConfig, instantiate

    def build(*overrides):
        cfg = LazyConfig.load(os.path.join(ROOT, "configs/detrex_dino/dino_dinov2_vitb14.py"))
        cfg = LazyConfig.apply_overrides(cfg, [
            "model.backbone.net.encoder_kwargs.depth=1",
            "model.backbone.net.encoder_kwargs.embed_dim=48", "model.backbone.net.encoder_kwargs.num_heads=3",
            "model.transformer.encoder.num_layers=1", "model.transformer.decoder.num_layers=1",
            "model.device=cpu", *overrides])
        cfg.model.backbone.net.weights = None  # random init
        cfg.model.backbone.net.pretrained = False
        torch.manual_seed(0)
        return instantiate(cfg.model).eval()
    return build


def _tile(size):
    return {"image": torch.rand(3, size, size) * 255, "height": size, "width": size}


def test_small_tile_is_refused_with_the_fix(dino):
    from d2geo.encoders import EncoderInputError
    from d2geo.modeling.detrex import encoder_tokens, smallest_tile

    model = dino()
    # patch 16 -> levels at strides 8, 16, 32, 64; 128 px tiles give 256 + 64 + 16 + 4 tokens
    assert encoder_tokens(128, 128, [8, 16, 32, 64]) == 340
    side = smallest_tile(900, [8, 16, 32, 64], multiple=64)
    assert encoder_tokens(side, side, [8, 16, 32, 64]) >= 900 > encoder_tokens(side - 64, side - 64, [8, 16, 32, 64])
    with pytest.raises(EncoderInputError, match=rf"340 tokens .* num_queries=900 .* at least {side}x{side} px"):
        with torch.no_grad():
            model([_tile(128)])


def test_queries_sized_to_the_tile_run(dino):
    model = dino("model.num_queries=300", "model.select_box_nums_for_evaluation=100")
    assert model.transformer.two_stage_num_proposals == 300  # the config interpolates num_queries
    with torch.no_grad():
        (out,) = model([_tile(128)])
    assert len(out["instances"]) == 100 and torch.isfinite(out["instances"].pred_boxes.tensor).all()


def test_more_selected_boxes_than_scores_is_refused(dino):
    with pytest.raises(ValueError, match="select_box_nums_for_evaluation=300 exceeds the 100"):
        dino("model.num_queries=100")
