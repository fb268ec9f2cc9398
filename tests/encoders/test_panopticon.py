"""Panopticon fidelity against the publishers' code (github.com/Panopticon-FM/panopticon, the
model its ``hubconf.py`` builds), carried as data: ``tests/fixtures/make_panopticon_fixture.py``
ran a tiny random-weight official model (seed in the file) and stored its state dict in the
published layout, the inputs and its block outputs for several band subsets (Sentinel-2 RGB and
six bands, Sentinel-1 VV/VH, RGB + ascending VV/VH) at the native and non-square sizes.

With ``PANOPTICON_REPO`` pointing at a checkout of that repository, the official module is also
run live at sizes and bands the fixture does not hold.
"""
import os
import sys
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from helpers import rel_err
from d2geo.encoders import BandError, CheckpointError, EncoderInputError, build_encoder, get_pretrained_cfg
from d2geo.encoders.panopticon import PANOPTICON_SAR_IDS, panopticon_channel_ids

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                    "panopticon_official_tiny.pt")
TOL = 1e-4
#: the fixture cases' bands, by name (their ids must be the official configs' ids)
CASE_BANDS = {
    "s2_rgb": (["B04", "B03", "B02"], "both"),
    "s2_six": (["blue", "green", "red", "B08", "B11", "B12"], "both"),
    "s1_vv_vh": (["VV", "VH"], "both"),
    "s2_rgb_s1_asc": (["B04", "B03", "B02", "VV", "VH"], "ascending"),
}


@pytest.fixture(scope="module")
def official():
    return torch.load(DATA, weights_only=True)


def _tiny(official, **kw):
    c = official["config"]
    return dict(embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"], attn_dim=c["attn_dim"],
                attn_heads=c["attn_heads"], **kw)


@pytest.fixture(scope="module")
def hub_file(official, tmp_path_factory):
    path = tmp_path_factory.mktemp("panopticon") / "panopticon_tiny_teacher.pth"
    torch.save(official["state_dict"], path)
    return path


def _compare(enc, case, metadata=None):
    x = case["input"].float()
    with torch.no_grad():
        for norm, key in ((True, "norm"), (False, "prenorm")):
            ours = enc.forward_features(x, layers=[0, 1, 2], norm=norm, metadata=metadata)
            for i, (o, r) in enumerate(zip(ours, case[key])):
                assert rel_err(o, r) <= TOL, (case["name"], tuple(x.shape), key, i)


def test_matches_official_panopticon_for_band_subsets_and_sizes(official, hub_file):
    """The published-layout file loads and gives the official features for optical, SAR and mixed
    band subsets named by band, at the native 70 x 70 and at non-square sizes, normed and raw."""
    assert {tuple(c["input"].shape[-2:]) for c in official["cases"]} >= {(70, 70), (56, 84), (42, 28)}
    for case in official["cases"]:
        bands, orbit = CASE_BANDS[case["name"]]
        enc = build_encoder("panopticon_vitb14", weights=hub_file, bands=bands, sar_orbit=orbit,
                            **_tiny(official)).eval()
        assert enc.default_ids == pytest.approx(case["chn_ids"])
        _compare(enc, case)


def test_metadata_wavelengths_in_micrometres(official, hub_file):
    """metadata wavelengths (micrometres) replace the band ids; they floor to the same nanometre
    as the official ids (664.6 -> 664), so the features are the official ones."""
    enc = build_encoder("panopticon_vitb14", weights=hub_file, **_tiny(official)).eval()
    case = official["cases"][1]  # S2 RGB at 56 x 84
    _compare(enc, case, metadata={"wavelengths": [0.6646, 0.5596, 0.4929]})
    with pytest.raises(EncoderInputError, match="looks like nanometres"):
        enc.forward_features(case["input"].float(), metadata={"wavelengths": [664.6, 559.6, 492.9]})


def test_channel_ids_follow_the_official_configs():
    # Sentinel-2: the spectral-response means of Panopticon's sentinel2.yaml, not bands.py's centres
    assert panopticon_channel_ids(["B08", "nir"], "sentinel-2-l2a") == pytest.approx([827.5394062383036] * 2)
    assert panopticon_channel_ids(["B4"], "landsat-c2-l1") == pytest.approx([654.2860463136833])
    assert panopticon_channel_ids(["red"], "naip") == pytest.approx([650.0])  # vocabulary centre
    assert panopticon_channel_ids(["VV", "VH"]) == [-1.0, -2.0]
    assert panopticon_channel_ids(["VH"], sar_orbit="descending") == [-10.0]
    assert sorted(PANOPTICON_SAR_IDS.values()) == list(range(-12, 0))


LIVE = pytest.mark.skipif(not os.environ.get("PANOPTICON_REPO"), reason="set PANOPTICON_REPO to a checkout of "
                          "github.com/Panopticon-FM/panopticon to also run the official module live")


def _official_module(config, state_dict=None):
    """The publishers' model with the hub settings (``hubconf._panopticon_vitb14``) at ``config``."""
    sys.path.insert(0, os.environ["PANOPTICON_REPO"])
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    from dinov2.layers import MemEffAttention, NestedTensorBlock as Block
    from dinov2.models.vision_transformer import DinoVisionTransformer

    c = config
    ref = DinoVisionTransformer(
        img_size=c["img_size"], patch_size=14, embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
        block_fn=partial(Block, attn_class=MemEffAttention), init_values=1e-5, ffn_layer="mlp", block_chunks=0,
        embed_layer="PanopticonPE", pe_args=dict(attn_dim=c["attn_dim"], chnfus_cfg=dict(
            attn_cfg=dict(num_heads=c["attn_heads"])))).eval()
    if state_dict is not None:
        ref.load_state_dict(state_dict)
    return ref


def _live_compare(ref, enc, shapes, layers):
    for shape in shapes:
        x = torch.randn(shape)
        ids = torch.tensor([enc.default_ids], dtype=torch.float64).repeat(shape[0], 1)
        with torch.no_grad():
            want = ref.get_intermediate_layers({"imgs": x, "chn_ids": ids}, n=layers, norm=True)
            got = enc.forward_features(x, layers=layers, norm=True)
        for g, w in zip(got, want):
            assert rel_err(g.flatten(2).transpose(1, 2), w) <= TOL, shape


@LIVE
def test_matches_live_official_module(official, hub_file):
    ref = _official_module(official["config"], official["state_dict"])
    enc = build_encoder("panopticon_vitb14", weights=hub_file, bands=["B02", "B05", "B8A", "B12", "VH"],
                        sar_orbit="descending", **_tiny(official)).eval()
    _live_compare(ref, enc, [(3, 5, 84, 42), (1, 5, 112, 112)], [0, 2])


@pytest.mark.slow
@LIVE
def test_real_size_matches_live_official_module(tmp_path):
    """ViT-B/14 with the published widths (random weights, 37 x 37 table) at 224 px and non-square."""
    torch.manual_seed(0)
    ref = _official_module(dict(img_size=518, embed_dim=768, depth=12, num_heads=12, attn_dim=2304, attn_heads=16))
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path / "teacher.pth"
    torch.save(ref.state_dict(), path)
    enc = build_encoder("panopticon_vitb14", weights=path, bands=["B04", "B03", "B02", "B08", "VV", "VH"]).eval()
    _live_compare(ref, enc, [(1, 6, 224, 224), (1, 6, 182, 252)], [3, 11])


def test_patch_14_to_16_preserves_features(official, hub_file):
    """The configs run at 16-pixel patches (power-of-two pyramid strides): the shared 14-pixel kernel
    is resampled with FlexiViT's pseudo-inverse, so an image whose 14 x 14 patches are each resized
    to 16 x 16 gives the original features."""
    case = official["cases"][1]
    x = case["input"].float()
    B, C, H, W = x.shape
    h, w = H // 14, W // 14
    p = x.reshape(B, C, h, 14, w, 14).permute(0, 2, 4, 1, 3, 5).reshape(-1, C, 14, 14)
    p = F.interpolate(p, size=(16, 16), mode="bicubic", antialias=True)
    x16 = p.reshape(B, h, w, C, 16, 16).permute(0, 3, 1, 4, 2, 5).reshape(B, C, h * 16, w * 16)
    enc16 = build_encoder("panopticon_vitb14", weights=hub_file, patch_size=16, bands=["B04", "B03", "B02"],
                          **_tiny(official)).eval()
    with torch.no_grad():
        got = enc16.forward_features(x16, layers=[0, 2], norm=True)
    for g, want in zip(got, (case["norm"][0], case["norm"][2])):
        assert rel_err(g, want) <= TOL


def test_band_order_does_not_matter(official, hub_file):
    """The channel cross-attention has no channel order: the same bands in another order (input and
    ``bands`` alike) give the same features, so no band kernel has to be reordered."""
    case = official["cases"][4]  # B04, B03, B02, VV, VH (ascending)
    x = case["input"].float()
    enc = build_encoder("panopticon_vitb14", weights=hub_file, bands=["VH", "B02", "VV", "B04", "B03"],
                        sar_orbit="ascending", **_tiny(official)).eval()
    with torch.no_grad():
        got = enc.forward_features(x[:, [4, 2, 3, 0, 1]], layers=[2], norm=True)[0]
    assert rel_err(got, case["norm"][2]) <= TOL


def test_layouts_load_alike(official, hub_file, tmp_path):
    """torchgeo's wrapper (``model.`` prefix) and a d2geo-written state dict load to the same model."""
    x = official["cases"][0]["input"].float()
    base = build_encoder("panopticon_vitb14", weights=hub_file, bands=["B04", "B03", "B02"], **_tiny(official)).eval()
    want = base(x)
    wrapped = tmp_path / "torchgeo.pth"
    torch.save({"model." + k: v for k, v in official["state_dict"].items() if k != "mask_token"}, wrapped)
    ours = tmp_path / "d2geo.pth"
    torch.save(base.state_dict(), ours)
    for path in (wrapped, ours):
        enc = build_encoder("panopticon_vitb14", weights=path, bands=["B04", "B03", "B02"], **_tiny(official)).eval()
        assert torch.allclose(enc(x), want, atol=1e-6), path.name


def test_unbuilt_patch_embedding_parts_are_refused(official, tmp_path):
    """A checkpoint with the channel layer norm (an upstream option the published model does not use)
    is refused by name instead of loading without it."""
    sd = dict(official["state_dict"])
    sd["patch_embed.chnfus.layer_norm.weight"] = torch.ones(official["config"]["attn_dim"])
    path = tmp_path / "ln.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="chnfus.layer_norm.weight .*not built here"):
        build_encoder("panopticon_vitb14", weights=path, **_tiny(official))


def test_missing_or_mismatched_channel_ids_are_explained(official):
    enc = build_encoder("panopticon_vitb14", **_tiny(official)).eval()
    x = torch.zeros(1, 3, 28, 28)
    with pytest.raises(EncoderInputError, match="build the encoder with bands=.*metadata=.*wavelengths"):
        enc(x)
    with pytest.raises(EncoderInputError, match="gives 2 wavelengths but the input has 3 bands"):
        enc(x, metadata={"wavelengths": [0.665, 0.56]})
    enc = build_encoder("panopticon_vitb14", bands=["VV", "VH"], **_tiny(official)).eval()
    with pytest.raises(EncoderInputError, match=r"bands \['VV', 'VH'\] are 2 but the input has 3 bands"):
        enc(x)


def test_reader_wavelengths_must_be_the_encoders_bands(official, hub_file):
    """An encoder built for bands keeps its (pretraining) channel ids when the reader's metadata
    gives those bands' vocabulary centres, and refuses the input of other bands instead of encoding
    them as the encoder's."""
    case = official["cases"][1]  # S2 RGB at 56 x 84
    enc = build_encoder("panopticon_vitb14", weights=hub_file, bands=["B04", "B03", "B02"], **_tiny(official)).eval()
    _compare(enc, case, metadata={"wavelengths": [0.665, 0.56, 0.493]})  # bands.py's centres: ids unchanged
    with pytest.raises(EncoderInputError, match=r"not those of the encoder's bands \['B04', 'B03', 'B02'\]"):
        enc(case["input"].float(), metadata={"wavelengths": [0.842, 0.56, 0.493]})


def test_bad_band_names_are_refused_at_build(official):
    with pytest.raises(BandError, match="'B99' is not in the band vocabulary"):
        build_encoder("panopticon_vitb14", bands=["B04", "B99"], **_tiny(official))
    with pytest.raises(ValueError, match="name one band twice"):
        build_encoder("panopticon_vitb14", bands=["red", "B04"], **_tiny(official))
    with pytest.raises(ValueError, match="sar_orbit 'up' is not one of"):
        build_encoder("panopticon_vitb14", bands=["VV"], sar_orbit="up", **_tiny(official))


def test_pretrained_entry_is_pinned_with_its_license():
    cfg = get_pretrained_cfg("panopticon_vitb14")
    assert cfg.pinned and cfg.revision == "c8c2bb9555819e8b2bcedf5b3b00e3bf531554e7"
    assert cfg.source.endswith("/panopticon_vitb14_teacher.pth") and cfg.license == "Apache-2.0"
    assert cfg.pinned_by and cfg.input_size == 224 and cfg.patch_size == 14


def test_published_size_builds_and_runs_small_inputs():
    enc = build_encoder("panopticon_vitb14", bands=["B04", "B03", "B02", "VV"]).eval()
    n = sum(p.numel() for p in enc.parameters())
    # ViT-B/14 trunk with its 37 x 37 table (86.1 M) + shared conv 0.45 M + key/value 10.6 M + proj 1.8 M
    assert 98.9e6 < n < 99.1e6
    assert tuple(enc.vit.pos_embed.shape) == (1, 1 + 37 * 37, 768)
    with torch.no_grad():
        out = enc.forward_features(torch.randn(1, 4, 28, 42), layers=[0, -1])
    assert [tuple(o.shape) for o in out] == [(1, 768, 2, 3)] * 2
