"""Scale-MAE fidelity against torchgeo's ``ScaleMAE`` (torchgeo/models/scale_mae.py, loaded
from the torchgeo 0.8.1 wheel), tiny widths, random weights in its state-dict layout.

torchgeo builds the GSD-scaled table for square inputs only (its side is
``sqrt(num_patches)``); square native and non-native sizes are compared with its model, and
non-square sizes with its own table function cropped to the grid (the table depends only
on row, column and ``res``) fed through its patch embedding, blocks and norm.
"""
from functools import partial

import pytest
import torch
import torch.nn as nn

from helpers import load_upstream_module, rel_err
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder
from d2geo.encoders.scale_mae import SCALE_MAE_PRETRAINED, gsd_sincos_table

TINY = dict(embed_dim=64, depth=3, num_heads=4)
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return load_upstream_module("torchgeo", "torchgeo/models/scale_mae.py", "_ref_torchgeo_scale_mae")


def _upstream_model(ref, img_size, res, sd=None):
    # scalemae_large_patch16's arguments with tiny widths
    model = ref.ScaleMAE(res=res, img_size=img_size, patch_size=16, mlp_ratio=4, qkv_bias=True,
                         norm_layer=partial(nn.LayerNorm, eps=1e-6), **TINY)
    if sd is not None:
        model.load_state_dict({k: v for k, v in sd.items() if k != "pos_embed"}, strict=False)
    return model.eval()


@pytest.fixture(scope="module")
def published(ref):
    """A random state dict of torchgeo's ScaleMAE (pos_embed, cls_token, blocks, norm, head)."""
    model = _upstream_model(ref, 64, 1.0)
    with torch.no_grad():
        sd = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
        sd["norm.weight"] = 1 + 0.2 * torch.randn_like(sd["norm.weight"])
    assert {"pos_embed", "cls_token", "head.weight", "norm.weight"} <= set(sd)
    return sd


def _ours(sd, **kw):
    return build_encoder("scalemae_vitl16", weights=sd, img_size=64, **TINY, **kw).eval()


def _compare(enc, model, x, gsd, layers=(0, 1, 2)):
    for norm in (False, True):
        with torch.no_grad():
            want = model.forward_intermediates(x, indices=list(layers), norm=norm, intermediates_only=True)
            got = enc.forward_features(x, layers=list(layers), norm=norm, metadata={"gsd": gsd})
        for i, (a, b) in enumerate(zip(got, want)):
            assert rel_err(a, b) <= TOL, (norm, layers[i], rel_err(a, b))


def test_native_and_non_native_square_sizes(ref, published):
    enc = _ours(published)
    for size, gsd in ((64, 0.3), (96, 10.0), (32, 2.5)):
        model = _upstream_model(ref, size, gsd, published)
        _compare(enc, model, torch.randn(2, 3, size, size), torch.tensor([gsd, gsd]))


def test_one_gsd_per_sample(ref, published):
    enc = _ours(published)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = enc.forward_features(x, layers=[2], metadata={"gsd": torch.tensor([0.5, 8.0])})[0]
    for b, gsd in enumerate((0.5, 8.0)):
        model = _upstream_model(ref, 64, gsd, published)
        with torch.no_grad():
            want = model.forward_intermediates(x[b:b + 1], indices=[2], norm=True, intermediates_only=True)[0]
        assert rel_err(got[b:b + 1], want) <= TOL
    # a different gsd gives different features: the scale is really used
    with torch.no_grad():
        other = enc.forward_features(x, layers=[2], metadata={"gsd": torch.tensor([8.0, 8.0])})[0]
    assert rel_err(other[:1], got[:1]) > 1e-2


def test_table_of_a_non_square_grid_is_upstreams_square_table_cropped(ref):
    gsd = torch.tensor([0.7, 3.0])
    up = ref.get_2d_sincos_pos_embed_with_resolution(64, 7, gsd, cls_token=True)[:, 1:].reshape(2, 7, 7, 64)
    for h, w in ((4, 7), (7, 3), (5, 5)):
        ours = gsd_sincos_table(64, (h, w), gsd).reshape(2, h, w, 64)
        assert rel_err(ours, up[:, :h, :w]) <= 1e-6, (h, w)


def test_non_square_sizes_against_upstream_pieces(ref, published):
    enc = _ours(published)
    model = _upstream_model(ref, 64, 1.0, published)
    for H, W, gsd in ((64, 96, 1.5), (80, 32, 0.3)):
        x = torch.randn(2, 3, H, W)
        h, w = H // 16, W // 16
        n = max(h, w)
        res = torch.full((2,), gsd)
        with torch.no_grad():
            table = ref.get_2d_sincos_pos_embed_with_resolution(64, n, res, cls_token=False).reshape(2, n, n, 64)
            pos = table[:, :h, :w].reshape(2, h * w, 64)
            t = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
            t = torch.cat([model.cls_token.expand(2, -1, -1), t + pos], dim=1)
            raw = []
            for blk in model.blocks:
                t = blk(t)
                raw.append(t)
            got_raw = enc.forward_features(x, layers=[0, 1, 2], norm=False, metadata={"gsd": gsd})
            got_norm = enc.forward_features(x, layers=[0, 1, 2], norm=True, metadata={"gsd": gsd})
        for i in range(3):
            for got, want in ((got_raw[i], raw[i]), (got_norm[i], model.norm(raw[i]))):
                want_map = want[:, 1:].reshape(2, h, w, 64).permute(0, 3, 1, 2)
                assert rel_err(got, want_map) <= TOL, (H, W, i)


def test_band_selection_by_name(ref, published):
    enc = _ours(published, bands=("blue", "red"))  # reversed subset: green starts at zero
    model = _upstream_model(ref, 64, 1.0, published)
    x = torch.randn(1, 2, 64, 64)
    full = torch.stack([x[:, 1], torch.zeros_like(x[:, 0]), x[:, 0]], dim=1)
    with torch.no_grad():
        want = model.forward_intermediates(full, indices=[2], norm=True, intermediates_only=True)[0]
        got = enc.forward_features(x, layers=[2], metadata={"gsd": 1.0})[0]
    assert rel_err(got, want) <= TOL


# -- bad input ---------------------------------------------------------------------------
def test_missing_gsd_is_refused_with_the_fix(published):
    enc = _ours(published)
    for md in (None, {"latlon": torch.tensor([[10.0, 20.0]])}):
        with pytest.raises(EncoderInputError, match=r"no 'gsd' metadata.*metadata=\{'gsd'"):
            enc.forward_features(torch.randn(1, 3, 64, 64), metadata=md)


def test_checkpoint_stored_table_is_named_as_left_out(published):
    from d2geo.encoders import load_encoder_weights

    enc = build_encoder("scalemae_vitl16", img_size=64, **TINY)
    report = load_encoder_weights(enc, published)
    assert "pos_embed" in report.ignored and "head.weight" in report.ignored
    assert enc.vit.pos_embed is None


def test_rgb_checkpoint_with_other_band_count_is_refused(published):
    sd = dict(published)
    sd["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"].repeat(1, 2, 1, 1)
    with pytest.raises(CheckpointError, match="pretrained_bands"):
        _ours(sd)


def test_pretrained_table_entry():
    entry = SCALE_MAE_PRETRAINED["scale_mae_vitl16"]
    assert entry.source.startswith("hf://isaaccorley/") and entry.license


@pytest.mark.slow
def test_published_size_builds():
    enc = build_encoder("scalemae_vitl16")
    assert (enc.embed_dim, enc.depth) == (1024, 24)
    out = enc.forward_features(torch.zeros(1, 3, 224, 160), layers=[23], metadata={"gsd": 0.5})
    assert tuple(out[0].shape) == (1, 1024, 14, 10)
