"""CROMA fidelity against torchgeo's ``CROMA`` (torchgeo/models/croma.py, loaded from the torchgeo
0.8.1 wheel), tiny widths, random weights in the layout of the published ``CROMA_*.pt`` files
(one state dict per sub-module: ``s1_encoder``, ``s1_GAP_FFN``, ``s2_encoder``, ``s2_GAP_FFN``,
``joint_encoder``, as torchgeo's ``load_weights`` reads them).

Square sizes are compared with upstream's ``CROMA(image_size=...)`` end to end; taps of inner
blocks (and every non-square size, which upstream's square-only bias cannot take) run
upstream's own blocks with a bias built here independently, by upstream's recipe on an
``h x w`` grid of patch centres.
"""
import itertools
import math

import pytest
import torch

from helpers import rel_err, torchgeo_croma
from d2geo.encoders import CheckpointError, EncoderInputError, build_encoder, load_encoder_weights
from d2geo.encoders.croma import CROMA_OPTICAL_BANDS, CROMA_PRETRAINED, alibi_2d

# upstream's ViT has 16 heads whatever the model size: the tiny model keeps them (head dim 4)
TINY = dict(embed_dim=64, depth=4, num_heads=16)
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return torchgeo_croma()


@pytest.fixture(scope="module")
def published(ref):
    return published_state_dict(ref)


def published_state_dict(ref) -> dict:
    """A random-weight checkpoint in the published layout (one state dict per sub-module)."""
    torch.manual_seed(7)
    model = ref.CROMA(modalities=["sar", "optical"], encoder_dim=64, encoder_depth=4, num_heads=16, image_size=64)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.add_(0.05 * torch.randn_like(p))
    return {k: {n: t.clone() for n, t in getattr(model, k).state_dict().items()}
            for k in ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")}


def _upstream(ref, published, image_size, modalities=("sar", "optical")):
    model = ref.CROMA(modalities=list(modalities), encoder_dim=64, encoder_depth=4, num_heads=16,
                      image_size=image_size)
    for k, sd in published.items():  # torchgeo's load_weights, module by module
        if hasattr(model, k):
            getattr(model, k).load_state_dict(sd, strict=True)
    return model.eval()


def _bias(h: int, w: int, heads: int = 16) -> torch.Tensor:
    """Upstream's get_2dalibi recipe on an h x w grid (independent of d2geo's construction)."""
    start = 2 ** (-(2 ** -(math.log2(heads) - 3)))
    slopes = torch.tensor([start * start**i for i in range(heads)], dtype=torch.float32).unsqueeze(1)
    points = list(itertools.product(range(h), range(w)))
    cols = [math.sqrt((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2) * slopes * -1 for p in points for q in points]
    return torch.cat(cols, dim=1).view(1, heads, h * w, h * w)


def _vit_taps(vit, x, bias):
    """Raw block outputs of upstream's ViT (its own layers, the bias fed in) and the final norm."""
    t = vit.linear_input(ref_patchify(x))
    taps = []
    for attn, ffn in vit.transformer.layers:
        t = attn(t, bias) + t
        t = ffn(t) + t
        taps.append(t)
    return taps, vit.transformer.norm_out


def _joint_taps(joint, sar, optical, bias):
    t, taps = sar, []
    for attn, cross, ffn in joint.layers:
        t = attn(t, bias) + t
        t = cross(t, optical, bias) + t
        t = ffn(t) + t
        taps.append(t)
    return taps, joint.norm_out


def ref_patchify(x):
    B, C, H, W = x.shape
    return x.reshape(B, C, H // 8, 8, W // 8, 8).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // 8) * (W // 8), C * 64)


def _maps(tokens, h, w):
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def _check(ours, taps, norm_out, x, h, w):
    layers = list(range(ours.depth))
    with torch.no_grad():
        raw = ours.forward_features(x, layers=layers, norm=False)
        normed = ours.forward_features(x, layers=layers, norm=True)
        for i in layers:
            assert rel_err(raw[i], _maps(taps[i], h, w)) <= TOL, ("raw", i)
            assert rel_err(normed[i], _maps(norm_out(taps[i]), h, w)) <= TOL, ("norm", i)


# -- the bias ---------------------------------------------------------------------------------
def test_alibi_equals_upstream_on_square_grids_and_the_recipe_on_others(ref):
    for g in (3, 7):  # (15, the native grid, is compared end to end below)
        assert rel_err(alibi_2d(16, (g, g)), ref.get_2dalibi(16, g * g)) < 1e-6
    for hw in ((2, 5), (7, 3)):
        assert rel_err(alibi_2d(16, hw), _bias(*hw)) < 1e-6
        assert rel_err(alibi_2d(4, hw), _bias(*hw, heads=4)) < 1e-6


# -- fidelity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [120, 64])
def test_square_sizes_against_upstream_croma(ref, published, size):
    """Native 120 px and another square size, end to end against CROMA(image_size=size)."""
    model = _upstream(ref, published, size)
    s1, s2 = torch.randn(2, 2, size, size), torch.randn(2, 12, size, size)
    with torch.no_grad():
        want = model(x_sar=s1, x_optical=s2)
    g = size // 8
    for modality, x, key in (("optical", s2, "optical_encodings"), ("sar", s1, "sar_encodings"),
                             ("joint", torch.cat([s2, s1], 1), "joint_encodings")):
        ours = build_encoder("croma_base", weights=published, modality=modality, **TINY).eval()
        with torch.no_grad():
            got = ours(x)
        assert rel_err(got, _maps(want[key], g, g)) <= TOL, (modality, size)
    # every tap, raw and normed, of each encoder
    bias = model.attn_bias
    with torch.no_grad():
        taps, norm_out = _vit_taps(model.s2_encoder, s2, bias)
        _check(build_encoder("croma_base", weights=published, **TINY).eval(), taps, norm_out, s2, g, g)
        taps, norm_out = _joint_taps(model.joint_encoder, want["sar_encodings"], want["optical_encodings"], bias)
        joint = build_encoder("croma_base", weights=published, modality="joint", **TINY).eval()
        _check(joint, taps, norm_out, torch.cat([s2, s1], 1), g, g)


@pytest.mark.parametrize("hw", [(40, 96), (72, 24)])
def test_non_square_sizes_against_upstream_blocks(ref, published, hw):
    model = _upstream(ref, published, 64)
    h, w = hw[0] // 8, hw[1] // 8
    bias = _bias(h, w)
    s1, s2 = torch.randn(1, 2, *hw), torch.randn(1, 12, *hw)
    with torch.no_grad():
        taps2, norm2 = _vit_taps(model.s2_encoder, s2, bias)
        taps1, norm1 = _vit_taps(model.s1_encoder, s1, bias)
        _check(build_encoder("croma_base", weights=published, **TINY).eval(), taps2, norm2, s2, h, w)
        _check(build_encoder("croma_base", weights=published, modality="sar", **TINY).eval(), taps1, norm1, s1, h, w)
        tapsj, normj = _joint_taps(model.joint_encoder, norm1(taps1[-1]), norm2(taps2[-1]), bias)
    # joint: Sentinel-1 first, TerraMind-style modality prefixes (what read_modalities names)
    joint = build_encoder("croma_base", weights=published, modality="joint", bands=["S1RTC", "S2L2A"], **TINY).eval()
    assert joint.bands[:3] == ("S1RTC:VV", "S1RTC:VH", "S2L2A:B01") and joint.depth == 2
    _check(joint, tapsj, normj, torch.cat([s1, s2], 1), h, w)


def test_band_subset_and_order_select_the_pretrained_kernel(ref, published):
    model = _upstream(ref, published, 48, modalities=("optical",))
    pick = ["B8A", "red", "S2L1C:B03", "B02"]  # ids, common names and prefixes, in another order
    ours = build_encoder("croma_base", weights=published, bands=pick, **TINY).eval()
    x = torch.randn(2, 4, 48, 48)
    full = torch.zeros(2, 12, 48, 48)  # the other bands contribute nothing
    for j, i in enumerate([8, 3, 2, 1]):
        full[:, i] = x[:, j]
    with torch.no_grad():
        want = model(x_optical=full)["optical_encodings"]
        assert rel_err(ours(x), _maps(want, 6, 6)) <= TOL


def test_torchgeo_state_dict_and_d2geo_round_trip(ref, published, tmp_path):
    model = _upstream(ref, published, 64)
    ours = build_encoder("croma_base", modality="joint", **TINY).eval()
    report = load_encoder_weights(ours, model.state_dict())  # torchgeo's module: flat keys + attn_bias
    assert "attn_bias" in report.ignored and any(k.startswith("s2_GAP_FFN.") for k in report.ignored)
    x = torch.randn(1, 14, 32, 48)
    path = tmp_path / "croma_joint.pth"
    torch.save({"model": {f"backbone.net.encoder.{k}": v for k, v in ours.state_dict().items()}}, path)
    again = build_encoder("croma_base", weights=path, modality="joint", **TINY).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), ours(x))
    # the published file: the other modality's encoders and the pooled heads are named, not loaded
    sar = build_encoder("croma_base", modality="sar", **TINY)
    report = load_encoder_weights(sar, published)
    assert {k.split(".")[0] for k in report.ignored} == {"s2_encoder", "s2_GAP_FFN", "s1_GAP_FFN", "joint_encoder"}


def test_real_s2l2a_and_s1rtc_tiles_through_read_modalities(terramind_examples, published):
    import os

    pytest.importorskip("detectron2", reason="d2geo.data needs detectron2: see README for installing it from source")

    from rasterio.windows import Window

    from d2geo.data.geotiff import read_modalities

    name = sorted(os.listdir(os.path.join(terramind_examples, "S2L2A")))[0]
    files = {m: os.path.join(terramind_examples, m, name) for m in ("S2L2A", "S1RTC")}
    sample = read_modalities(files, window=Window(0, 0, 96, 64))
    enc = build_encoder("croma_base", weights=published, modality="joint", bands=list(sample.band_names), **TINY).eval()
    x = torch.as_tensor(sample.image, dtype=torch.float32)[None]
    with torch.no_grad():
        out = enc.forward_features((x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True), layers=[0, 1])
    assert tuple(out[1].shape) == (1, 64, 8, 12) and torch.isfinite(out[1]).all()


# -- bad input ---------------------------------------------------------------------------------
def test_wrong_band_count_and_size_are_refused():
    enc = build_encoder("croma_base", modality="joint", **TINY)
    with pytest.raises(EncoderInputError, match=r"13 channels.*expects 14 \(optical: 12, sar: 2"):
        enc(torch.randn(1, 13, 64, 64))
    with pytest.raises(EncoderInputError, match="multiple of the patch size 8"):
        enc(torch.randn(1, 14, 60, 64))


def test_modality_and_band_mismatches_are_refused():
    with pytest.raises(ValueError, match="needs Sentinel-1.*give both"):
        build_encoder("croma_base", modality="joint", bands=list(CROMA_OPTICAL_BANDS), **TINY)
    with pytest.raises(ValueError, match="Sentinel-1 channels but modality='optical'.*modality='joint'"):
        build_encoder("croma_base", bands=["B04", "VV"], **TINY)
    with pytest.raises(ValueError, match="B10.*cirrus"):
        build_encoder("croma_base", bands=["B02", "B10"], **TINY)
    with pytest.raises(ValueError, match="modality 'DEM'"):
        build_encoder("croma_base", bands=["DEM:DEM"], **TINY)
    with pytest.raises(ValueError, match="not one of"):
        build_encoder("croma_base", modality="both", **TINY)
    with pytest.raises(ValueError, match="name one band twice"):
        build_encoder("croma_base", bands=["B02", "blue"], **TINY)


def test_architecture_constraints_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        build_encoder("croma_base", embed_dim=60, depth=2, num_heads=6)
    with pytest.raises(ValueError, match="not divisible"):
        build_encoder("croma_base", embed_dim=72, depth=2, num_heads=16)
    with pytest.raises(ValueError, match="depth >= 2"):
        build_encoder("croma_base", modality="sar", embed_dim=64, depth=1, num_heads=16)
    with pytest.raises(ValueError, match="no window attention"):
        build_encoder("croma_base", **TINY).set_window_attention(4)


def test_checkpoint_of_another_layout_is_refused(published):
    bad = {k: dict(v) for k, v in published.items()}
    bad["s2_encoder"]["linear_input.weight"] = torch.randn(64, 13 * 64)  # a 13-band kernel
    with pytest.raises(CheckpointError, match="takes 832 values per patch, not 12 bands"):
        build_encoder("croma_base", weights=bad, **TINY)
    with pytest.raises(CheckpointError, match="attn_bias"):
        build_encoder("croma_base", weights={**{f"s2_encoder.{k}": v for k, v in published["s2_encoder"].items()},
                                             "attn_bias": torch.zeros(1, 8, 4, 4)}, **TINY)


def test_pretrained_table(ref):
    urls = {w.url.split("/resolve/", 1)[1] for enum in (ref.CROMABase_Weights, ref.CROMALarge_Weights)
            for w in enum}
    for name, entry in CROMA_PRETRAINED.items():
        repo_rev, filename = entry.source[len("hf://torchgeo/croma@"):].split("/", 1)
        assert f"{repo_rev}/{filename}" in urls, name
        assert entry.input_size == 120 and entry.patch_size == 8


@pytest.mark.slow
def test_published_size_builds():
    enc = build_encoder("croma_large", modality="joint")
    assert enc.depth == 12 and len(enc.s2_encoder.blocks) == 24 and len(enc.s1_encoder.blocks) == 12
    with torch.no_grad():
        out = enc.forward_features(torch.zeros(1, 14, 120, 80), layers=[5, 11])
    assert tuple(out[1].shape) == (1, 1024, 15, 10)


def test_joint_layer_ids_put_the_unimodal_vits_in_the_embedding():
    """Freezing and layer-wise lr decay see the joint blocks; the two ViTs before them are layer 0."""
    enc = build_encoder("croma_base", modality="joint", **TINY)
    ids = enc.param_layer_ids()
    assert {ids[k] for k in ids if k.startswith(("s1_encoder.", "s2_encoder."))} == {0}
    assert ids["joint_encoder.blocks.1.cross_attn.to_k.weight"] == 2
    assert ids["joint_encoder.norm.weight"] == enc.depth + 1 == 3
    optical = build_encoder("croma_base", **TINY)
    assert optical.param_layer_ids()["s2_encoder.blocks.3.ffn.net.0.weight"] == 4 and optical.depth == 4


def test_channels_of_two_processing_levels_are_refused():
    """S2L1C and S2L2A (or S1GRD and S1RTC) channels are two products of one sensor, not one image."""
    with pytest.raises(ValueError, match="mix S2L1C and S2L2A channels.*processing levels of one sensor"):
        build_encoder("croma_base", bands=["S2L1C:B04", "S2L2A:B03", "S2L1C:B02"], **TINY)
    with pytest.raises(ValueError, match="mix S1GRD and S1RTC channels"):
        build_encoder("croma_base", modality="joint", bands=["S2L2A:B04", "S1GRD:VV", "S1RTC:VH"], **TINY)
    build_encoder("croma_base", modality="joint", bands=["S2L2A:B04", "S2:B03", "S1RTC:VV", "VH"], **TINY)
