"""SSL4EO-S12 data2vec ViT-S/16 fidelity: the official code, carried as data.

The official network (SSL4EO-S12 ``models/data2vec/modeling_cyclical.py`` on
``modeling_finetune.py``) is in no wheel, so ``tests/fixtures/make_ssl4eo_data2vec_fixture.py``
ran it from a checkout: a tiny model in the published structure and checkpoint layout,
with its per-block outputs (norm on and off) at the native grid, at a square grid of
another size (its shared table resized by the official fine-tuning code) and at non-square
grids (resized per axis by timm's ``resize_rel_pos_bias_table``, cubic), plus the real-size
key layout and two real-size outputs from formula weights.
"""
import os
import sys

import pytest
import torch

from helpers import rel_err

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures"))
from make_dinov3_fixture import formula_input, formula_weights  # noqa: E402

from d2geo.encoders.adapt import BAND_RECORD  # noqa: E402
from d2geo.encoders import (  # noqa: E402
    CheckpointError,
    EncoderInputError,
    ManualDownloadError,
    build_encoder,
    get_pretrained_cfg,
    list_pretrained,
    resolve_weights,
)
from d2geo.encoders.checkpoint import load_encoder_weights  # noqa: E402
from d2geo.encoders.ssl4eo import S2_L1C_BANDS, SSL4EO_STATS  # noqa: E402
from d2geo.encoders.ssl4eo_data2vec import resample_rel_pos_axis  # noqa: E402

NAME = "ssl4eo_s12_vits16_data2vec"
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                    "ssl4eo_data2vec_official_tiny.pt")
TOL = 1e-4


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA, weights_only=True)


def _tiny(official) -> dict:
    t = official["tiny"]
    return dict(embed_dim=t["embed_dim"], depth=t["depth"], num_heads=t["num_heads"], img_size=t["img_size"])


@pytest.fixture(scope="module")
def encoder(official):
    # the published file is a training checkpoint: the student under "model" (what the
    # official fine-tuning loads), the EMA teacher beside it
    ckpt = {"model": official["state_dict"],
            "model_ema": {k: v + 1 for k, v in official["state_dict"].items()}, "epoch": 99}
    return build_encoder(NAME, weights=ckpt, **_tiny(official)).eval()


def _tokens(fmap: torch.Tensor) -> torch.Tensor:
    return fmap.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D), row-major as the official


def test_published_structure_is_what_the_fixture_ran(official):
    """The structural arguments the official beit_small_patch16_224 builds the published
    model with (captured from it) are the ones this encoder hard-wires."""
    s = official["structural"]
    assert (s["embed_dim"], s["depth"], s["num_heads"], s["patch_size"], s["in_chans"]) == (384, 12, 6, 16, 13)
    assert s["use_shared_rel_pos_bias"] is True and s["use_abs_pos_emb"] is False and s["qkv_bias"] is True
    assert s["init_values"] > 0 and s["mlp_ratio"] == 4 and official["norm_eps"] == 1e-6
    enc = build_encoder(NAME, **_tiny(official))
    assert enc.beit.pos_embed is None and enc.beit.rel_pos_bias is not None
    assert all(b.attn.relative_position_bias_table is None and b.gamma_1 is not None for b in enc.beit.blocks)
    assert enc.beit.norm.eps == 1e-6 and enc.bands == S2_L1C_BANDS


def test_official_outputs_at_native_square_and_non_square_grids(official, encoder):
    cases = official["cases"]
    grids = [tuple(c["grid"]) for c in cases]
    assert grids[0] == (4, 4) and (6, 6) in grids and any(h != w for h, w in grids)
    worst = 0.0
    for case in cases:
        x = formula_input(case["shape"], case["seed"])
        for norm in (False, True):
            with torch.no_grad():
                got = encoder.forward_features(x, layers=[0, 1, 2], norm=norm)
            for i, (g, want) in enumerate(zip(got, case["norm" if norm else "prenorm"])):
                assert tuple(g.shape[-2:]) == tuple(case["grid"])
                err = rel_err(_tokens(g), want)
                assert err <= TOL, (case["grid"], case["table"], norm, i, err)
                worst = max(worst, err)
    assert worst > 0  # resized tables are computed, not copied


def test_timm_beit_itself_equals_the_official_model(official, encoder):
    """The point of wrapping timm's Beit: its own forward is the official computation."""
    case = official["cases"][0]
    x = formula_input(case["shape"], case["seed"])
    for norm in (False, True):
        with torch.no_grad():
            got = encoder.beit.forward_intermediates(x, indices=[0, 1, 2], norm=norm, output_fmt="NLC",
                                                     intermediates_only=True)
        for g, want in zip(got, case["norm" if norm else "prenorm"]):
            assert rel_err(g, want) <= TOL


def test_training_checkpoint_loads_the_student_and_names_what_it_leaves_out(official):
    sd = official["state_dict"]
    enc = build_encoder(NAME, **_tiny(official))
    report = load_encoder_weights(enc, {"model": sd, "model_ema": {k: v + 1 for k, v in sd.items()},
                                        "optimizer": {"state": {}}})
    assert torch.equal(enc.beit.blocks[1].gamma_2, sd["blocks.1.gamma_2"])
    assert torch.equal(enc.beit.rel_pos_bias.relative_position_bias_table,
                       sd["rel_pos_bias.relative_position_bias_table"])
    ignored = report.ignored
    assert "mask_token" in ignored and "lm_head.weight" in ignored
    assert "rel_pos_bias.relative_position_index" in ignored
    assert any(k.startswith("model_ema.") for k in ignored)
    # the official index buffer is the one timm computes
    assert torch.equal(enc.beit.rel_pos_bias.relative_position_index, sd["rel_pos_bias.relative_position_index"])
    # a bare state dict under a DDP prefix, and d2geo's own state dict, load the same
    again = build_encoder(NAME, weights={f"module.{k}": v for k, v in sd.items()}, **_tiny(official))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), enc.state_dict().values()))
    third = build_encoder(NAME, weights=enc.state_dict(), **_tiny(official))
    assert all(torch.equal(a, b) for a, b in zip(third.state_dict().values(), enc.state_dict().values()))


def test_real_size_official_layout_loads_key_for_key(official):
    enc = build_encoder(NAME)
    own = {k: v for k, v in enc.state_dict().items() if k != BAND_RECORD}  # the band record is d2geo's own
    sd = {k: torch.zeros(s) for k, s in official["real_keys"]}
    filtered = enc.checkpoint_filter_fn(sd)
    assert set(filtered) == set(own)
    assert all(filtered[k].shape == own[k].shape for k in own)
    assert set(filtered.ignored) == {"mask_token", "lm_head.weight", "lm_head.bias",
                                     "rel_pos_bias.relative_position_index"}
    assert own["beit.rel_pos_bias.relative_position_bias_table"].shape == (27 * 27 + 3, 6)


@pytest.mark.slow
def test_real_size_formula_weights_match_the_official_outputs(official):
    real = official["real_formula"]
    shapes = [(k, s) for k, s in official["real_keys"] if not k.endswith("relative_position_index")]
    enc = build_encoder(NAME, weights=formula_weights(shapes)).eval()
    x = formula_input(real["shape"], real["seed"])
    with torch.no_grad():
        pre, normed = (enc.forward_features(x, layers=[layer], norm=norm)[0]
                       for layer, norm in zip(real["layers"], (False, True)))
    assert rel_err(_tokens(pre), real["prenorm"]) <= TOL
    assert rel_err(_tokens(normed), real["norm"]) <= TOL


def test_table_resampling_keeps_unchanged_axes_and_the_gradient(official, encoder):
    import numpy as np

    assert np.array_equal(resample_rel_pos_axis(7, 7), np.eye(7))
    m = resample_rel_pos_axis(7, 11)  # 4 -> 6 patches: the cubic spline reproduces constants
    assert m.shape == (11, 7) and np.allclose(m.sum(1), 1.0)
    # 4 x 6 patches: the first axis keeps its 7 offsets, so rows of equal column offset match
    table = encoder.beit.rel_pos_bias.relative_position_bias_table
    bias = encoder.relative_position_bias((4, 6))
    assert bias.shape == (2, 25, 25)
    # cls rows are the table's last three rows, unchanged
    assert torch.equal(bias[:, 0, 0], table[-1]) and torch.equal(bias[:, 0, 1], table[-3])
    # fine-tuning at another size trains the stored table
    enc = build_encoder(NAME, **_tiny(official))
    enc.forward_features(torch.randn(1, 13, 64, 96), layers=[0])[0].sum().backward()
    assert enc.beit.rel_pos_bias.relative_position_bias_table.grad.abs().sum() > 0


def test_layer_ids_and_weight_decay_follow_the_official_fine_tuning(official):
    enc = build_encoder(NAME, **_tiny(official))
    ids = enc.param_layer_ids()
    depth = enc.depth
    assert ids["beit.rel_pos_bias.relative_position_bias_table"] == depth + 1  # get_num_layer_for_vit
    assert ids["beit.cls_token"] == 0 and ids["beit.patch_embed.proj.weight"] == 0
    assert ids["beit.blocks.1.gamma_1"] == 2 and ids["beit.norm.weight"] == depth + 1
    assert enc.no_weight_decay() == {"beit.cls_token"}


# -- bad input ---------------------------------------------------------------------------------
def test_checkpoint_of_another_beit_layout_is_refused(official):
    sd = dict(official["state_dict"])
    sd["blocks.0.attn.relative_position_bias_table"] = sd["rel_pos_bias.relative_position_bias_table"]
    with pytest.raises(CheckpointError, match="a relative position table in every block"):
        build_encoder(NAME, weights=sd, **_tiny(official))
    sd = dict(official["state_dict"], pos_embed=torch.zeros(1, 17, 32))
    with pytest.raises(CheckpointError, match="an absolute position table"):
        build_encoder(NAME, weights=sd, **_tiny(official))


def test_table_of_another_grid_is_refused_with_the_fix(official):
    with pytest.raises(CheckpointError, match=r"table is for a 4x4 grid \(64 px at patch 16\) but the encoder "
                                              r"was built with img_size=96; build it with img_size=64"):
        build_encoder(NAME, weights=official["state_dict"], **dict(_tiny(official), img_size=96))


def test_l2a_stack_without_b10_is_refused(official, encoder):
    with pytest.raises(EncoderInputError, match="input has 12 bands but the encoder expects 13"):
        encoder.forward_features(torch.zeros(1, 12, 64, 64))


def test_pretrained_entry_says_how_to_download_by_hand(official, tmp_path):
    cfg = get_pretrained_cfg(NAME)
    assert cfg.source == "https://drive.google.com/file/d/1YecuYPAxl1NIzLmsmdbUROjCb5g0t80l/view"
    assert cfg.stats == (SSL4EO_STATS,) and cfg.input_size == 224 and cfg.patch_size == 16
    assert NAME in list_pretrained()
    with pytest.raises(ManualDownloadError, match=(
            r"pretrained=True: ssl4eo_s12_vits16_data2vec's published weights are shared at "
            r"https://drive\.google\.com/file/d/1YecuYPAxl1NIzLmsmdbUROjCb5g0t80l/view, which d2geo cannot "
            r"download \(a browser is needed\): open .* in a browser, download the file, and pass its local "
            r"path as weights=")):
        build_encoder(NAME, pretrained=True, **_tiny(official))
    with pytest.raises(ManualDownloadError, match="answers download clients with a confirmation page"):
        resolve_weights(cfg.source)
    # the file downloaded by hand loads by path, with or without pretrained=True
    path = tmp_path / "B13_vits16_data2vec_0099.pth"
    torch.save({"model": official["state_dict"]}, path)
    enc = build_encoder(NAME, pretrained=True, weights=str(path), **_tiny(official))
    assert torch.equal(enc.beit.cls_token, official["state_dict"]["cls_token"])


def test_window_attention_is_refused_with_the_fix(official):
    """timm's BEiT attention takes no attention mask (its bias is the relative position table),
    so ViTDet window attention cannot run in its blocks."""
    enc = build_encoder(NAME, **_tiny(official))
    with pytest.raises(ValueError, match="has no attention module 'attn' taking an attn_mask keyword, which "
                                         "window attention needs; list it in global_blocks"):
        enc.set_window_attention(2, global_blocks=(2,))
    assert enc.window_size == 0


def test_traced_encoder_refuses_another_grid_with_the_fix(official, encoder):
    """The resampled table is computed in Python per grid, so a traced model holds the table
    of the traced size: at that size it equals eager, at another it says to trace again."""
    import warnings

    x = formula_input((1, 13, 64, 96), 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(encoder, (x,), check_trace=False)
    with torch.no_grad():
        assert rel_err(traced(x), encoder(x)) <= 1e-6
    with pytest.raises(Exception, match=r"traced for a 4x6 patch grid; .* trace or export it again at this "
                                        r"input size"):
        traced(formula_input((1, 13, 80, 64), 8))


def test_checkpoint_of_other_bands_is_refused_with_the_fix(official):
    sd = dict(official["state_dict"])
    sd["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"][:, :12]
    with pytest.raises(CheckpointError, match=r"pass pretrained_bands=\[\.\.\.\] naming the checkpoint's bands"):
        build_encoder(NAME, weights=sd, **_tiny(official))
    # the 12 L2A bands picked by name from the 13 pretrained ones load (B10's kernel dropped)
    l2a = [b for b in S2_L1C_BANDS if b != "B10"]
    enc = build_encoder(NAME, weights=official["state_dict"], bands=l2a, **_tiny(official))
    assert torch.equal(enc.beit.patch_embed.proj.weight[:, 10], official["state_dict"]["patch_embed.proj.weight"][:, 11])


def test_backbone_file_without_the_final_norm_keeps_a_fresh_one(official, caplog):
    import logging

    sd = {k: v for k, v in official["state_dict"].items() if not k.startswith("norm.")}
    with caplog.at_level(logging.INFO, logger="d2geo.encoders.ssl4eo_data2vec"):
        enc = build_encoder(NAME, weights=sd, **_tiny(official))
    assert torch.equal(enc.beit.norm.weight, torch.ones(32)) and torch.equal(enc.beit.norm.bias, torch.zeros(32))
    assert "the checkpoint has no norm.weight" in caplog.text
